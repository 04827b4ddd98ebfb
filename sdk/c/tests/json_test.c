/* Unit tests of the C SDK's JSON parser and writer, URL and header helpers.
 * A plain WASI program (no protocol): prints one line per failed check, then
 * "N checks, M failed", and exits 1 if any failed.  tests/test_sdk.py builds
 * it with `python -m ziglang cc -target wasm32-wasi` and runs it under
 * wasmer-sdk; it also builds natively (cc -I.. json_test.c -lm). */
#define WASMDECK_IMPLEMENTATION
#include "wasmdeck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks, failed;

#define CHECK(cond)                                                           \
    do {                                                                      \
        checks++;                                                             \
        if (!(cond)) {                                                        \
            failed++;                                                         \
            printf("FAIL line %d: %s\n", __LINE__, #cond);                    \
        }                                                                     \
    } while (0)

static wd_json *parse(const char *s) { return wd_json_parse(s, strlen(s)); }

/* Parse, serialise, compare with `want` (NULL: expect a parse error). */
static void roundtrip(const char *text, const char *want, int line) {
    wd_json *v = parse(text);
    checks++;
    if (!want) {
        if (v) {
            failed++;
            printf("FAIL line %d: %s parsed but should not\n", line, text);
        }
        wd_json_free(v);
        return;
    }
    if (!v) {
        failed++;
        printf("FAIL line %d: %s did not parse: %s\n", line, text, wd_last_error());
        return;
    }
    {
        size_t n;
        char *out = wd_json_serialize(v, &n);
        if (!out || strlen(want) != n || memcmp(out, want, n) != 0) {
            failed++;
            printf("FAIL line %d: %s serialised as %s, want %s\n", line, text, out ? out : "(null)", want);
        }
        free(out);
    }
    wd_json_free(v);
}
#define RT(text, want) roundtrip(text, want, __LINE__)
#define BAD(text) roundtrip(text, NULL, __LINE__)

static void test_strings(void) {
    wd_json *v = parse("\"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t \\u00e9 \\u20AC \\ud83d\\ude00\"");
    CHECK(v && v->type == WD_JSON_STRING);
    CHECK(v && strcmp(v->string, "q\" b\\ s/ \b\f\n\r\t \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == 0);
    wd_json_free(v);

    v = parse("\"a\\u0000b\"");
    CHECK(v && v->string_len == 3 && memcmp(v->string, "a\0b", 3) == 0);
    wd_json_free(v);

    /* lone surrogates become U+FFFD */
    v = parse("\"x\\ud800y\\udc00z\\ud83d\"");
    CHECK(v && strcmp(v->string, "x\xef\xbf\xbdy\xef\xbf\xbdz\xef\xbf\xbd") == 0);
    wd_json_free(v);

    /* raw UTF-8 passes through */
    v = parse("\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
    CHECK(v && strcmp(v->string, "caf\xc3\xa9 \xf0\x9f\x98\x80") == 0);
    wd_json_free(v);

    RT("\"\\u0001\\u001f\\u007f\"", "\"\\u0001\\u001f\x7f\"");
    RT("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"");
    RT("\"tab\\t\"", "\"tab\\t\"");
    BAD("\"tab\there\"");
    BAD("\"new\nline\"");
    BAD("\"\\x\"");
    BAD("\"\\u12\"");
    BAD("\"\\u12g4\"");
    BAD("\"abc");
    BAD("\"abc\\\"");
    BAD("'x'");
}

static void test_numbers(void) {
    wd_json *v = parse("-12.25E-2");
    CHECK(v && v->type == WD_JSON_NUMBER && v->number == -0.1225);
    wd_json_free(v);
    v = parse("9007199254740993");
    CHECK(v && wd_json_int(v, 0) == 9007199254740992LL);
    wd_json_free(v);
    RT("0", "0");
    RT("-0", "-0");
    RT("1.5e3", "1500");
    RT("0.1", "0.1");
    RT("123456789012", "123456789012");
    RT("1e21", "1e+21");
    RT("2.5e-8", "2.5e-08");
    RT("1.7976931348623157e308", "1.7976931348623157e+308");
    RT("1e400", "null"); /* infinity cannot be written as JSON */
    BAD("01");
    BAD("1.");
    BAD(".5");
    BAD("-");
    BAD("+1");
    BAD("1e");
    BAD("1e+");
    BAD("0x10");
    BAD("NaN");
    BAD("Infinity");
    {
        static const double xs[] = {0.1, 1.0 / 3, 2.0 / 3, 1e-300, 5e-324, 123.456, -9.999999999999999e22};
        for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
            wd_jw w = {0};
            wd_json *back;
            wd_jw_number(&w, xs[i]);
            back = parse(w.out.data);
            CHECK(back && back->number == xs[i]);
            wd_json_free(back);
            wd_jw_free(&w);
        }
    }
}

static void test_structure(void) {
    wd_json *v = parse(" { \"a\" : [1, true, false, null, {\"b\": \"c\"}], \"d\": {}, \"e\": [], \"a\": 2 } ");
    CHECK(v && v->type == WD_JSON_OBJECT && v->count == 4);
    CHECK(wd_json_int(wd_json_get(v, "a"), 0) == 2); /* the last of a repeated key */
    CHECK(v && v->items[0].type == WD_JSON_ARRAY && v->items[0].count == 5);
    CHECK(v && strcmp(v->items[0].key, "a") == 0);
    CHECK(wd_json_get(v, "missing") == NULL);
    CHECK(wd_json_path(v, "d") && wd_json_path(v, "d")->type == WD_JSON_OBJECT);
    CHECK(wd_json_at(wd_json_get(v, "e"), 0) == NULL);
    wd_json_free(v);

    v = parse("{\"event\":{\"request\":{\"url\":\"https://x/\"}},\"logs\":[{\"message\":[\"m0\",\"m1\"]}]}");
    CHECK(strcmp(wd_json_string(wd_json_path(v, "event.request.url"), ""), "https://x/") == 0);
    CHECK(strcmp(wd_json_string(wd_json_path(v, "logs.0.message.1"), ""), "m1") == 0);
    CHECK(wd_json_path(v, "logs.1.message") == NULL);
    CHECK(wd_json_path(v, "logs.x") == NULL);
    CHECK(wd_json_string(wd_json_path(v, "event.request"), "fallback")[0] == 'f');
    CHECK(wd_json_bool(wd_json_path(v, "event"), 7) == 7);
    wd_json_free(v);

    RT("[1,[2,[3,{\"k\":[]}]]]", "[1,[2,[3,{\"k\":[]}]]]");
    RT(" \t\r\n[ ] ", "[]");
    RT("{\"\\u00e9\":\"\\\"\"}", "{\"\xc3\xa9\":\"\\\"\"}");
    BAD("");
    BAD("   ");
    BAD("[1,]");
    BAD("[1 2]");
    BAD("{\"a\":1,}");
    BAD("{a:1}");
    BAD("{\"a\" 1}");
    BAD("{\"a\":}");
    BAD("[");
    BAD("]");
    BAD("{} {}");
    BAD("tru");
    BAD("nul");
    BAD("truex");
    BAD("[1] x");
    {
        /* 256 levels parse, 257 do not */
        char deep[600];
        memset(deep, '[', 256);
        memset(deep + 256, ']', 256);
        deep[512] = '\0';
        v = parse(deep);
        CHECK(v != NULL);
        wd_json_free(v);
        memset(deep, '[', 257);
        memset(deep + 257, ']', 257);
        deep[514] = '\0';
        v = parse(deep);
        CHECK(v == NULL && strstr(wd_last_error(), "too deep"));
    }
    v = parse("[1, ?]");
    CHECK(v == NULL && strstr(wd_last_error(), "offset 4"));
}

static void test_writer(void) {
    wd_jw w = {0};
    wd_jw_begin_object(&w);
    wd_jw_key(&w, "s");
    wd_jw_string(&w, "a\"b\\c\n\x01\xff\xc3\xa9");
    wd_jw_key(&w, "n");
    wd_jw_int(&w, -42);
    wd_jw_key(&w, "f");
    wd_jw_number(&w, 0.5);
    wd_jw_key(&w, "t");
    wd_jw_bool(&w, 1);
    wd_jw_key(&w, "z");
    wd_jw_null(&w);
    wd_jw_key(&w, "a");
    wd_jw_begin_array(&w);
    wd_jw_raw(&w, "{\"raw\":1}", 9);
    wd_jw_stringn(&w, "x\0y", 3);
    wd_jw_string(&w, NULL);
    wd_jw_end_array(&w);
    wd_jw_end_object(&w);
    CHECK(!w.failed);
    CHECK(w.out.data && strcmp(w.out.data, "{\"s\":\"a\\\"b\\\\c\\n\\u0001\xef\xbf\xbd\xc3\xa9\",\"n\":-42,\"f\":0.5,"
                                         "\"t\":true,\"z\":null,\"a\":[{\"raw\":1},\"x\\u0000y\",null]}") == 0);
    wd_jw_free(&w);

    memset(&w, 0, sizeof w);
    wd_jw_begin_object(&w);
    wd_jw_int(&w, 1); /* a value where a key is needed */
    CHECK(w.failed);
    wd_jw_free(&w);

    memset(&w, 0, sizeof w);
    wd_jw_begin_array(&w);
    wd_jw_end_object(&w); /* mismatched */
    CHECK(w.failed);
    wd_jw_free(&w);

    memset(&w, 0, sizeof w);
    wd_jw_int(&w, 1);
    wd_jw_int(&w, 2); /* two top-level values */
    CHECK(w.failed);
    wd_jw_free(&w);

    {
        /* invalid UTF-8 of every kind becomes U+FFFD; valid sequences pass */
        wd_buf b = {0};
        wd_json_quote(&b, "\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe2\x82|\xf0\x9f\x98\x80", 19);
        CHECK(b.data && strcmp(b.data, "\"\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                                       "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
                                       "\xf0\x9f\x98\x80\"") == 0);
        wd_buf_free(&b);
    }
}

static void test_urls_and_headers(void) {
    char *s;
    size_t n;
    s = wd_url_host("https://User:pw@Example.COM:8443/a/b?x=1#f");
    CHECK(strcmp(s, "example.com") == 0);
    free(s);
    s = wd_url_host("http://[::1]:8080/");
    CHECK(strcmp(s, "[::1]") == 0);
    free(s);
    s = wd_url_host("/just/a/path");
    CHECK(strcmp(s, "") == 0);
    free(s);
    CHECK(wd_url_port("https://example.com:8443/") == 8443);
    CHECK(wd_url_port("https://example.com/") == 443);
    CHECK(wd_url_port("http://example.com?x") == 80);
    CHECK(wd_url_port("http://[::1]:9/") == 9);
    s = wd_url_path("https://example.com");
    CHECK(strcmp(s, "/") == 0);
    free(s);
    s = wd_url_path("https://example.com/a%20b/c?q#f");
    CHECK(strcmp(s, "/a%20b/c") == 0);
    free(s);
    s = wd_url_query("https://x/?a=1&b=two+words&a=%C3%A9&c&d=&e=%zz#a=frag", "a", 1);
    CHECK(s && strcmp(s, "\xc3\xa9") == 0);
    free(s);
    s = wd_url_query("https://x/?a=1&b=two+words&c&d=&e=%zz", "b", 0);
    CHECK(s && strcmp(s, "two words") == 0);
    free(s);
    s = wd_url_query("https://x/?a=1&c&d=", "c", 0);
    CHECK(s && strcmp(s, "") == 0);
    free(s);
    s = wd_url_query("https://x/?a=1&c&d=", "d", 0);
    CHECK(s && strcmp(s, "") == 0);
    free(s);
    s = wd_url_query("https://x/?e=%zz%4", "e", 0);
    CHECK(s && strcmp(s, "%zz%4") == 0);
    free(s);
    CHECK(wd_url_query("https://x/?a=1#b=2", "b", 0) == NULL);
    CHECK(wd_url_query("https://x/", "a", 0) == NULL);
    s = wd_url_decode("%41%4a+%", 8, &n);
    CHECK(n == 4 && memcmp(s, "AJ %", 4) == 0);
    free(s);

    CHECK(wd_url_matches("https://api.example.com/x", "api.example.com"));
    CHECK(wd_url_matches("https://API.Example.com/x", "api.EXAMPLE.com"));
    CHECK(!wd_url_matches("https://api.example.com.evil/x", "api.example.com"));
    CHECK(wd_url_matches("https://a.b.example.com/", "*.example.com"));
    CHECK(!wd_url_matches("https://example.com/", "*.example.com"));
    CHECK(!wd_url_matches("https://badexample.com/", "*.example.com"));
    CHECK(wd_url_matches("http://anything.test:81/", "*"));
    CHECK(wd_url_matches("http://127.0.0.1:81/", "*"));
    CHECK(!wd_url_matches("http://127.0.0.1/", "*.0.0.1"));
    CHECK(!wd_url_matches("http://[::1]/", "*.1]"));
    CHECK(wd_url_matches("https://api.example.com:8443/", "api.example.com:8443"));
    CHECK(!wd_url_matches("https://api.example.com/", "api.example.com:8443"));
    CHECK(wd_url_matches("https://api.example.com/", "api.example.com:443"));
    CHECK(wd_url_matches("http://[::1]:8080/", "[::1]:8080"));
    CHECK(!wd_url_matches("http://[::1]:8080/", "[::1]:80"));
    CHECK(wd_url_matches_list("http://127.0.0.1:5000/", "api.example.com, 127.0.0.1 ,*.trusted.example"));
    CHECK(wd_url_matches_list("http://x.trusted.example/", "api.example.com,*.trusted.example"));
    CHECK(!wd_url_matches_list("http://trusted.example/", "api.example.com,*.trusted.example"));
    CHECK(!wd_url_matches_list("http://a/", ""));
    CHECK(!wd_url_matches_list("http://a/", " , ,"));
    CHECK(!wd_url_matches_list("not a url", "*"));

    {
        wd_headers h = {0};
        wd_headers_add(&h, "Set-Cookie", "a=1");
        wd_headers_add(&h, "content-type", "text/plain");
        wd_headers_add(&h, "set-cookie", "b=2");
        CHECK(strcmp(wd_headers_get(&h, "SET-COOKIE"), "a=1") == 0);
        CHECK(strcmp(wd_headers_get_nth(&h, "set-cookie", 1), "b=2") == 0);
        CHECK(wd_headers_get_nth(&h, "set-cookie", 2) == NULL);
        wd_headers_set(&h, "Content-Type", "text/html");
        CHECK(h.count == 3 && strcmp(h.items[2].name, "Content-Type") == 0);
        CHECK(wd_headers_remove(&h, "set-cookie") == 2 && h.count == 1);
        wd_headers_free(&h);
        CHECK(h.count == 0 && h.items == NULL);
    }
}

int main(void) {
    test_strings();
    test_numbers();
    test_structure();
    test_writer();
    test_urls_and_headers();
    printf("%d checks, %d failed\n", checks, failed);
    return failed ? 1 : 0;
}
