/*
 * wasmdeck.h - the guest side of the wasmdeck Worker protocol, versions 1 and
 * 2, for C programs compiled to wasm32-wasi (WASI preview 1) with wasi-libc.
 *
 * The protocol (docs/worker-protocol.md): the engine writes an event frame
 * (`fetch` or `tail`) to the guest's stdin; the guest may write `log` frames
 * and make calls (`fetch`, `dispatch`), each answered by one frame on stdin;
 * it ends the event with one final frame (`response`, `done` or `exception`).
 * A frame is meta_length (u32 LE), body_length (u32 LE), a JSON object, then
 * raw body bytes.  This header does all of that, and exports the marker
 * function that tells the engine the module speaks the protocol:
 *
 * - version 1 (the default): `wasmdeck_worker_protocol_1`; the process serves
 *   one event and exits.
 * - version 2, warm instances (section 9): `#define WASMDECK_VERSION 2`
 *   before including the header with WASMDECK_IMPLEMENTATION exports
 *   `wasmdeck_worker_protocol_2`; the engine then starts the module with an
 *   `init` frame, and wd_serve answers it with `ready` and serves event
 *   after event in one process until stdin ends.  Global
 *   state lives on between events (do not rely on it: an instance can be
 *   replaced at any time), so free what you allocate per event; wd_env()
 *   also sees the event's per-invocation `env`; wd_retire() ends the
 *   instance after the current event.
 *
 * USE (stb-style single header)
 *
 *     #define WASMDECK_IMPLEMENTATION      // in exactly ONE .c file
 *     #include "wasmdeck.h"
 *
 *     static void on_fetch(const wd_request *req, wd_response *res) {
 *         char *name = wd_request_query(req, "name");     // NULL if absent
 *         wd_log(WD_INFO, "greeting %s", name ? name : "nobody");
 *         wd_response_header(res, "content-type", "text/plain");
 *         wd_response_printf(res, "hello %s\n", name ? name : "world");
 *     }                                                   // status 200 unless set
 *
 *     int main(void) { return wd_serve(on_fetch, NULL); }
 *
 * Build: python -m ziglang cc -target wasm32-wasi -O2 -Wall -Wextra -Ipath/to/sdk/c worker.c
 *        -o worker.wasm   (the header compiles warning-free with -Wall -Wextra).
 * Other translation units include the header without the define and get the
 * declarations only.  C99 or later; not meant to be compiled as C++.
 *
 * RULES
 * - Never write to stdout yourself (no printf/puts): stdout carries frames
 *   only, and stray text ends the invocation with an exception.  stderr is
 *   free: every stderr line becomes a log entry ("warn: ..." sets the level).
 * - Memory: a version 1 Worker lives for one event.  Strings returned as
 *   `char *` are malloc'd and owned by the caller (free them or not: under
 *   version 2, free them, or the instance's memory grows with every event
 *   until it hits its cap); `const` pointers belong to the SDK and live until
 *   the event ends (version 2) or the process exits (version 1), or until the
 *   matching *_free call.
 * - wd_throw under version 2: C cannot unwind back to the serve loop, so the
 *   exception frame carries "retire": true and the process exits; the next
 *   request gets a fresh instance.
 * - Errors: functions returning int give WD_OK (0) on success, WD_EFAILED (1)
 *   when the host answered a call with an error (fetch_error /
 *   dispatch_error), or a negative WD_E* code; wd_last_error() describes the
 *   last failure in one sentence.
 * - Limits: the SDK never writes a frame over the protocol limits (meta
 *   1 MiB, body 10 MiB).  A call or response that would need one fails with
 *   WD_ETOOBIG instead; a response from the fetch handler that is too big is
 *   replaced by an `exception` frame named `ResponseTooLarge`.  Log messages
 *   are cut to 128 KiB (the engine keeps 64 KiB and marks the item
 *   truncated).  Strings are sent as JSON: bytes that are not valid UTF-8
 *   are sent as U+FFFD.
 *
 * API SUMMARY (details beside each declaration below)
 *
 *   Entry point
 *     int  wd_serve(wd_fetch_handler on_fetch, wd_tail_handler on_tail);
 *       typedef void (*wd_fetch_handler)(const wd_request *, wd_response *);
 *       typedef void (*wd_tail_handler)(const wd_tail_batch *);
 *     const char *wd_worker_name(void);  const char *wd_namespace_name(void);
 *     const wd_json *wd_event_meta(void);  const char *wd_env(name, fallback);
 *     long wd_invocation(void);  void wd_retire(void);      (version 2)
 *   Requests (incoming, and outgoing for wd_fetch / wd_dispatch)
 *     wd_request { method, url, headers, body, body_len }
 *     const char *wd_request_header(req, name);          case-insensitive
 *     char *wd_request_query(req, name);  wd_request_query_nth(req, name, n);
 *     char *wd_request_path(req);  char *wd_request_host(req);
 *     char *wd_url_host(url);  char *wd_url_path(url);
 *     char *wd_url_query(url, name, n);  char *wd_url_decode(s, n, &len);
 *     int wd_url_port(url);  int wd_url_matches(url, pattern);
 *     int wd_url_matches_list(url, "api.example.com,*.cdn.example:443");
 *   Headers (ordered [name, value] pairs; also used for outbound params)
 *     wd_headers_add / _set / _remove / _get / _get_nth / _copy / _free
 *   Responses
 *     wd_response { status, headers, body, body_len }
 *     wd_response_header(res, name, value)  wd_response_set_header(...)
 *     wd_response_write(res, data, n)  wd_response_print(res, s)
 *     wd_response_printf(res, fmt, ...)  wd_response_text(res, status, text)
 *     int wd_respond(res);      send now (the handler's return sends it too)
 *   Logs, exceptions
 *     int  wd_log(wd_level level, const char *fmt, ...);
 *     void wd_throw(const char *name, const char *fmt, ...);   never returns
 *   Calls
 *     int wd_fetch(const wd_request *req, wd_result *out);
 *     int wd_fetch_url(const char *method, const char *url, wd_result *out);
 *     int wd_dispatch(const char *name, const wd_dispatch_options *opts,
 *                     const wd_request *req_or_NULL, wd_result *out);
 *     void wd_result_free(wd_result *);
 *   JSON (parser, accessors, writer)
 *     wd_json *wd_json_parse(const char *text, size_t len);  wd_json_free()
 *     wd_json_get / _at / _path / _string / _number / _int / _bool
 *     char *wd_json_serialize(const wd_json *v, size_t *len);
 *     wd_jw writer: wd_jw_begin_object/_end_object/_begin_array/_end_array,
 *       wd_jw_key, wd_jw_string(n), wd_jw_number, wd_jw_int, wd_jw_bool,
 *       wd_jw_null, wd_jw_value, wd_jw_raw, wd_jw_free
 *     wd_buf byte builder: wd_buf_append / _puts / _printf / _free
 *   Frames (low level: the raw protocol, no state checks except limits)
 *     int wd_frame_read(wd_frame *);  int wd_frame_write(meta, n, body, n);
 *
 * This file is part of wasmdeck (MIT licence).
 */
#ifndef WASMDECK_H
#define WASMDECK_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- limits */

#ifndef WASMDECK_VERSION
#define WASMDECK_VERSION 1  /* 2: warm instances (define it before including the header) */
#endif
#if WASMDECK_VERSION != 1 && WASMDECK_VERSION != 2
#error "WASMDECK_VERSION must be 1 or 2"
#endif
#define WD_PROTOCOL_VERSION WASMDECK_VERSION
#define WD_MAX_META_BYTES 1048576u   /* 1 MiB: largest meta of a frame */
#define WD_MAX_BODY_BYTES 10485760u  /* 10 MiB: largest body of a frame */
#define WD_MAX_LOG_BYTES 131072u     /* log messages are cut to this many bytes */
#define WD_JSON_MAX_DEPTH 256        /* deepest nesting the parser and writer accept */

/* ----------------------------------------------------------- error codes */

#define WD_OK 0
#define WD_EFAILED 1    /* the host answered the call with an error (see wd_result) */
#define WD_EIO (-1)     /* reading stdin or writing stdout failed, or stdin ended */
#define WD_ETOOBIG (-2) /* a frame would be over the limits (sent or received) */
#define WD_EPROTO (-3)  /* the host sent something the protocol does not allow */
#define WD_ENOMEM (-4)  /* malloc failed */
#define WD_ESTATE (-5)  /* not allowed now (e.g. a log after the final frame) */
#define WD_EINVAL (-6)  /* a bad argument (e.g. status 42, NULL url) */

/* One sentence about the last failure of any wd_* function ("" if none). */
const char *wd_last_error(void);

/* ------------------------------------------------------------------ bytes */

/* A growable byte buffer.  Zero-initialise it ({0}).  `data` is always
 * NUL-terminated once anything was appended; `failed` is set when malloc
 * failed (later appends are then ignored). */
typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} wd_buf;

void wd_buf_append(wd_buf *b, const void *data, size_t n);
void wd_buf_puts(wd_buf *b, const char *s);
void wd_buf_printf(wd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void wd_buf_vprintf(wd_buf *b, const char *fmt, va_list ap);
void wd_buf_free(wd_buf *b);

/* ------------------------------------------------------------------- JSON */

typedef enum {
    WD_JSON_NULL,
    WD_JSON_BOOL,
    WD_JSON_NUMBER,
    WD_JSON_STRING,
    WD_JSON_ARRAY,
    WD_JSON_OBJECT
} wd_json_type;

/* A parsed JSON value.  Arrays and objects hold `count` children in `items`
 * (in document order); each child of an object has its member name in
 * `key` (NUL-terminated UTF-8, `key_len` bytes).  Strings are decoded UTF-8,
 * NUL-terminated, `string_len` bytes (a \u0000 escape gives an inner NUL).
 * Escapes are decoded: \" \\ \/ \b \f \n \r \t and \uXXXX including
 * surrogate pairs; a lone surrogate becomes U+FFFD. */
typedef struct wd_json wd_json;
struct wd_json {
    wd_json_type type;
    const char *key;      /* member name inside an object, else NULL */
    size_t key_len;
    int boolean;          /* WD_JSON_BOOL */
    double number;        /* WD_JSON_NUMBER */
    const char *string;   /* WD_JSON_STRING */
    size_t string_len;
    wd_json *items;       /* WD_JSON_ARRAY / WD_JSON_OBJECT */
    size_t count;
};

/* Parse `len` bytes of JSON text (RFC 8259: one value, surrounded by
 * optional whitespace; no comments, trailing commas, NaN, leading zeros or
 * raw control characters in strings; at most WD_JSON_MAX_DEPTH levels).
 * Returns the root value, or NULL with wd_last_error() set ("JSON: ... at
 * offset N"). */
wd_json *wd_json_parse(const char *text, size_t len);
/* Free a tree returned by wd_json_parse (the root only; NULL is fine). */
void wd_json_free(wd_json *root);

/* The member `key` of an object (the last one if repeated), or NULL. */
const wd_json *wd_json_get(const wd_json *object, const char *key);
/* Element `index` of an array (or member of an object), or NULL. */
const wd_json *wd_json_at(const wd_json *array, size_t index);
/* Follow a dot-separated path of member names and array indices, e.g.
 * "event.request.url" or "logs.0.message"; NULL when any step is missing. */
const wd_json *wd_json_path(const wd_json *value, const char *path);
/* Typed reads with a fallback when `v` is NULL or of another type. */
const char *wd_json_string(const wd_json *v, const char *fallback);
double wd_json_number(const wd_json *v, double fallback);
long long wd_json_int(const wd_json *v, long long fallback); /* numbers only, truncated */
int wd_json_bool(const wd_json *v, int fallback);

/* Serialise a value as compact JSON (malloc'd, NUL-terminated; *len gets
 * the length when len is not NULL).  NULL on failure. */
char *wd_json_serialize(const wd_json *v, size_t *len);

/* A streaming JSON writer that places commas and colons itself.
 * Zero-initialise it, call the functions in document order, then use
 * `out.data` / `out.len`; `failed` is set on misuse (a value where a key is
 * needed, too deep, unbalanced) or out of memory. */
typedef struct {
    wd_buf out;
    int depth;
    int failed;
    unsigned char kind[WD_JSON_MAX_DEPTH];   /* 'o' object, 'a' array */
    unsigned char count[WD_JSON_MAX_DEPTH];  /* 0: nothing written yet at that level */
    int after_key;
} wd_jw;

void wd_jw_begin_object(wd_jw *w);
void wd_jw_end_object(wd_jw *w);
void wd_jw_begin_array(wd_jw *w);
void wd_jw_end_array(wd_jw *w);
void wd_jw_key(wd_jw *w, const char *key);
void wd_jw_keyn(wd_jw *w, const char *key, size_t n);
void wd_jw_string(wd_jw *w, const char *s);          /* NULL writes null */
void wd_jw_stringn(wd_jw *w, const char *s, size_t n);
void wd_jw_number(wd_jw *w, double x);               /* NaN and infinities write null */
void wd_jw_int(wd_jw *w, long long x);
void wd_jw_bool(wd_jw *w, int b);
void wd_jw_null(wd_jw *w);
void wd_jw_value(wd_jw *w, const wd_json *v);       /* a parsed tree */
void wd_jw_raw(wd_jw *w, const char *json, size_t n); /* already-serialised JSON */
void wd_jw_free(wd_jw *w);
/* Append a quoted, escaped JSON string to a buffer. */
void wd_json_quote(wd_buf *b, const char *s, size_t n);

/* ---------------------------------------------------------------- headers */

typedef struct {
    char *name;
    char *value;
} wd_header;

/* An ordered list of [name, value] pairs, names as sent; lookups compare
 * names case-insensitively.  Zero-initialise it ({0}). */
typedef struct {
    wd_header *items;
    size_t count, cap;
} wd_headers;

int wd_headers_add(wd_headers *h, const char *name, const char *value);  /* append (copies) */
int wd_headers_set(wd_headers *h, const char *name, const char *value);  /* remove all, then add */
size_t wd_headers_remove(wd_headers *h, const char *name);             /* how many were removed */
const char *wd_headers_get(const wd_headers *h, const char *name);     /* first value, or NULL */
const char *wd_headers_get_nth(const wd_headers *h, const char *name, size_t n);
int wd_headers_copy(wd_headers *dst, const wd_headers *src);           /* append all of src */
void wd_headers_free(wd_headers *h);

/* --------------------------------------------------------------- requests */

/* An HTTP request: the one a fetch event delivers, or one to send with
 * wd_fetch / wd_dispatch.  For sending, `method` NULL means GET and `body`
 * may be NULL when `body_len` is 0.  Zero-initialise it. */
typedef struct {
    const char *method;
    const char *url;
    wd_headers headers;
    const unsigned char *body;  /* incoming bodies are also NUL-terminated */
    size_t body_len;
} wd_request;

const char *wd_request_header(const wd_request *req, const char *name);
/* The URL-decoded value of query parameter `name` (first, or n-th from 0),
 * malloc'd; "" for "?name" or "?name="; NULL when absent. */
char *wd_request_query(const wd_request *req, const char *name);
char *wd_request_query_nth(const wd_request *req, const char *name, size_t n);
char *wd_request_path(const wd_request *req);   /* "/a/b" (no query), malloc'd */
char *wd_request_host(const wd_request *req);   /* lower-case hostname, no port, malloc'd */

char *wd_url_host(const char *url);   /* "" when the URL has no authority */
char *wd_url_path(const char *url);   /* "/" when empty */
char *wd_url_query(const char *url, const char *name, size_t n);
/* The URL's port: the explicit one, else 443 for https and 80 for http, else 0. */
int wd_url_port(const char *url);
/* Does the URL's host (and port) match `pattern`?  A pattern is a hostname
 * (`api.example.com`), a wildcard (`*.example.com`: any subdomain, not
 * example.com itself; never an IP address) or `*`, each optionally with
 * `:PORT` (without one, any port matches); hostnames compare
 * case-insensitively.  The egress-policy rules of docs/worker-protocol.md
 * section 5, for Outbound Workers. */
int wd_url_matches(const char *url, const char *pattern);
/* Does it match any entry of a comma-separated list (spaces around entries
 * are ignored; an empty list matches nothing)? */
int wd_url_matches_list(const char *url, const char *list);
/* Decode form-urlencoding ('+' is a space, %XX a byte; malformed escapes kept). */
char *wd_url_decode(const char *s, size_t n, size_t *out_len);

/* -------------------------------------------------------------- responses */

/* The response a fetch handler fills in.  wd_serve passes one with status
 * 200, no headers and an empty body, and sends it when the handler returns
 * (unless the handler already called wd_respond or wd_throw). */
typedef struct {
    int status;
    wd_headers headers;
    unsigned char *body;
    size_t body_len, body_cap;
} wd_response;

int wd_response_header(wd_response *res, const char *name, const char *value);     /* add */
int wd_response_set_header(wd_response *res, const char *name, const char *value); /* replace */
int wd_response_write(wd_response *res, const void *data, size_t n);
int wd_response_print(wd_response *res, const char *s);
int wd_response_printf(wd_response *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Set the status, content-type text/plain (unless one is set) and the body. */
int wd_response_text(wd_response *res, int status, const char *text);
void wd_response_free(wd_response *res);
/* Send the final `response` frame now.  WD_EINVAL for a status outside
 * 100-599, WD_ETOOBIG when it does not fit in a frame, WD_ESTATE when not
 * answering a fetch event or already answered. */
int wd_respond(const wd_response *res);

/* ----------------------------------------------------------- logs, throw */

typedef enum { WD_DEBUG, WD_INFO, WD_LOG, WD_WARN, WD_ERROR } wd_level;

/* Send a `log` frame (printf-style).  Allowed while handling an event,
 * before its final frame; otherwise WD_ESTATE.  Version 2: the frame leaves
 * with the next frame the SDK writes (a call or the final frame, in one
 * write), or at exit(); a trap or a limit hit before then loses it (stderr
 * lines are never held). */
int wd_log(wd_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int wd_vlog(wd_level level, const char *fmt, va_list ap);

/* Send an `exception` frame {name, message} and exit(0).  The invocation's
 * outcome is `exception`; a fetch event answers 500.  After a final frame
 * was already sent, it only writes "error: NAME: message" to stderr and
 * exits with status 1. */
void wd_throw(const char *name, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));

/* ------------------------------------------------------------------ calls */

/* The answer to wd_fetch or wd_dispatch.  When `ok` is 1 the host produced
 * an HTTP response: status, headers, body (NUL-terminated) and, for
 * dispatch, the user Worker's `outcome`.  When `ok` is 0, `error_name` and
 * `error_message` say why: the host's fetch_error / dispatch_error (e.g.
 * TooManySubrequests, EgressBlocked, NetworkError, NotAllowed), or an SDK
 * failure (RequestTooLarge, ProtocolError, OutOfMemory, InvalidRequest). */
typedef struct {
    int ok;
    int status;
    wd_headers headers;
    unsigned char *body;
    size_t body_len;
    char *outcome;        /* dispatch: ok, exception, exceededCpu, exceededMemory,
                             exceededWallTime, scriptNotFound, loadShed, internalError */
    char *error_name;
    char *error_message;
} wd_result;

/* Make a `fetch` call and wait for its answer.  Returns WD_OK with
 * out->ok = 1 for any HTTP response (4xx and 5xx included), WD_EFAILED for a
 * fetch_error, or a negative code (out->ok = 0 and error_name set in every
 * case).  Fetches are sequential: the call blocks until the answer. */
int wd_fetch(const wd_request *req, wd_result *out);
int wd_fetch_url(const char *method, const char *url, wd_result *out);

/* Options of a dispatch call.  Negative limits are left out (the tag
 * limits apply); `outbound` holds [param, value] pairs for the Outbound
 * Worker's parameters.  Initialise with WD_DISPATCH_OPTIONS_INIT. */
typedef struct {
    long cpu_ms;
    long sub_requests;
    wd_headers outbound;
} wd_dispatch_options;
#define WD_DISPATCH_OPTIONS_INIT {-1, -1, {0, 0, 0}}

/* Run user Worker `name` (same namespace) with the incoming request, or
 * with `req` when it is not NULL.  Returns WD_OK with out->ok = 1 and
 * out->outcome / status / headers / body for any dispatch_result (also
 * scriptNotFound and the limit outcomes), WD_EFAILED for a dispatch_error,
 * or a negative code.  `options` may be NULL. */
int wd_dispatch(const char *name, const wd_dispatch_options *options, const wd_request *req,
                wd_result *out);

void wd_result_free(wd_result *r);

/* ---------------------------------------------------------------- serving */

/* A batch of trace items for a tail handler.  `items` is the parsed JSON
 * array (NULL, with `parse_error` set, if the body was not valid JSON); walk
 * it with wd_json_at / wd_json_path.  `body` is the raw batch. */
typedef struct {
    size_t count;             /* the event's `count` */
    const wd_json *items;
    const unsigned char *body;
    size_t body_len;
    const char *parse_error;
} wd_tail_batch;

typedef void (*wd_fetch_handler)(const wd_request *req, wd_response *res);
typedef void (*wd_tail_handler)(const wd_tail_batch *batch);

/* Read the event from stdin and run the matching handler, then send the
 * final frame (`response` or `done`).  A handler that is NULL for the event
 * received answers with an exception `NoHandler`.  Returns the exit status
 * for main(): 0, or 1 when the event could not be read or the final frame
 * could not be written (the reason goes to stderr).
 * When the first frame is `init` (the engine runs the module as a version 2
 * instance, because it exports `wasmdeck_worker_protocol_2`), answer it with
 * `ready`, then do the above for event after event, in one process, until
 * stdin ends (return 0) or the handler called wd_retire() (return 0 after
 * that event's final frame). */
int wd_serve(wd_fetch_handler on_fetch, wd_tail_handler on_tail);

const char *wd_worker_name(void);     /* the event's "worker", or "" */
const char *wd_namespace_name(void);  /* the event's "namespace", or "" */
const wd_json *wd_event_meta(void);   /* the whole event meta, or NULL before the event */
/* Version 2, for a Worker that read `init` and answered `ready` itself
 * (wd_frame_read / wd_frame_write): serve event after event as wd_serve
 * does after ready. */
int wd_serve_events(wd_fetch_handler on_fetch, wd_tail_handler on_tail);

/* The event's per-invocation `env` value for `name` (version 2: e.g. an
 * Outbound Worker's parameters), else getenv(name); `fallback` when unset or
 * empty.  A value from the event lives until the event ends. */
const char *wd_env(const char *name, const char *fallback);
/* Version 2: the invocation number of the event being handled (1 for the
 * instance's first event, then 2, 3...); 1 under version 1. */
long wd_invocation(void);
/* Version 2: end this instance after the current event: its final frame
 * carries "retire": true and wd_serve returns 0 after sending it.  Under
 * version 1 (one event per process anyway) it does nothing. */
void wd_retire(void);

/* ----------------------------------------------------------------- frames */

typedef struct {
    wd_json *meta;          /* parsed; always an object */
    const char *type;       /* meta.type */
    unsigned char *body;    /* NUL-terminated */
    size_t body_len;
} wd_frame;

/* Read one frame from stdin (handles short reads).  WD_EIO at end of
 * input, WD_ETOOBIG over the limits, WD_EPROTO when meta is not a JSON
 * object with a string `type`. */
int wd_frame_read(wd_frame *frame);
void wd_frame_free(wd_frame *frame);
/* Write one frame to stdout (handles short writes).  WD_ETOOBIG, without
 * writing anything, when meta_len > 1 MiB or body_len > 10 MiB.  No
 * protocol-state checks: this is the raw layer.  Log frames wd_log holds
 * (version 2) go out first, in the same write. */
int wd_frame_write(const char *meta, size_t meta_len, const void *body, size_t body_len);

#ifdef __cplusplus
}
#endif

#endif /* WASMDECK_H */

/* =================================================================== */
/*                           IMPLEMENTATION                            */
/* =================================================================== */

#ifdef WASMDECK_IMPLEMENTATION
#ifndef WASMDECK_IMPLEMENTATION_DONE
#define WASMDECK_IMPLEMENTATION_DONE

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The marker the engine looks for (docs/worker-protocol.md, sections 1 and 9.1). */
#if WASMDECK_VERSION == 2
#if defined(__wasm__)
__attribute__((export_name("wasmdeck_worker_protocol_2"), used))
#endif
void wasmdeck_worker_protocol_2(void) {}
#else
#if defined(__wasm__)
__attribute__((export_name("wasmdeck_worker_protocol_1"), used))
#endif
void wasmdeck_worker_protocol_1(void) {}
#endif

/* ------------------------------------------------------------ errors */

static char wd__err[256];

static void wd__seterr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void wd__seterr(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(wd__err, sizeof wd__err, fmt, ap);
    va_end(ap);
}

const char *wd_last_error(void) { return wd__err; }

static char *wd__strdup(const char *s) {
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

static char *wd__strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static int wd__lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int wd__ieq(const char *a, const char *b) {
    while (*a && *b) {
        if (wd__lower((unsigned char)*a) != wd__lower((unsigned char)*b)) return 0;
        a++, b++;
    }
    return *a == *b;
}

/* --------------------------------------------------------------- wd_buf */

static int wd__buf_reserve(wd_buf *b, size_t extra) {
    size_t need, cap;
    char *p;
    if (b->failed) return 0;
    if (extra > (size_t)-1 - b->len - 1) { b->failed = 1; return 0; }
    need = b->len + extra + 1;
    if (need <= b->cap) return 1;
    cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (!p) { b->failed = 1; return 0; }
    b->data = p;
    b->cap = cap;
    return 1;
}

void wd_buf_append(wd_buf *b, const void *data, size_t n) {
    if (!wd__buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void wd_buf_puts(wd_buf *b, const char *s) { wd_buf_append(b, s, strlen(s)); }

void wd_buf_vprintf(wd_buf *b, const char *fmt, va_list ap) {
    va_list copy;
    int n;
    char small[256];
    va_copy(copy, ap);
    n = vsnprintf(small, sizeof small, fmt, copy);
    va_end(copy);
    if (n < 0) { b->failed = 1; return; }
    if ((size_t)n < sizeof small) { wd_buf_append(b, small, (size_t)n); return; }
    if (!wd__buf_reserve(b, (size_t)n)) return;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void wd_buf_printf(wd_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    wd_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void wd_buf_free(wd_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

/* ---------------------------------------------------------- JSON: parse */

typedef struct wd__chunk {
    struct wd__chunk *next;
    size_t used, cap;
    /* data follows, 16-aligned */
} wd__chunk;

#define WD__CHUNK_HDR ((sizeof(wd__chunk) + 15) & ~(size_t)15)

typedef struct {
    wd__chunk *chunks;
    wd_json root;
} wd__doc;

static void *wd__arena_alloc(wd__doc *doc, size_t n) {
    wd__chunk *c = doc->chunks;
    n = (n + 15) & ~(size_t)15;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        c = malloc(WD__CHUNK_HDR + cap);
        if (!c) return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = doc->chunks;
        doc->chunks = c;
    }
    c->used += n;
    return (char *)c + WD__CHUNK_HDR + c->used - n;
}

typedef struct {
    const unsigned char *start, *p, *end;
    wd__doc *doc;
    const char *error;
    int depth;
} wd__parser;

static int wd__fail(wd__parser *ps, const char *what) {
    if (!ps->error) {
        ps->error = what;
        wd__seterr("JSON: %s at offset %zu", what, (size_t)(ps->p - ps->start));
    }
    return -1;
}

static void wd__ws(wd__parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int wd__hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

static size_t wd__utf8_put(unsigned char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Parse a string starting at the opening quote. */
static int wd__parse_string(wd__parser *ps, const char **out, size_t *out_len) {
    const unsigned char *q;
    unsigned char *buf, *o;
    ps->p++; /* opening quote */
    /* find the closing quote; the decoded string is never longer than the raw one */
    for (q = ps->p; q < ps->end && *q != '"'; q++) {
        if (*q == '\\') {
            q++;
            if (q >= ps->end) break;
        }
    }
    if (q >= ps->end) return wd__fail(ps, "unterminated string");
    buf = wd__arena_alloc(ps->doc, (size_t)(q - ps->p) + 1);
    if (!buf) return wd__fail(ps, "out of memory");
    o = buf;
    while (ps->p < q) {
        unsigned c = *ps->p;
        if (c < 0x20) return wd__fail(ps, "control character in string");
        if (c != '\\') { *o++ = (unsigned char)c; ps->p++; continue; }
        ps->p++;
        c = *ps->p++;
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (q - ps->p < 4 || !wd__hex4(ps->p, &cp)) {
                ps->p--;
                return wd__fail(ps, "bad \\u escape");
            }
            ps->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (q - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' && wd__hex4(ps->p + 2, &lo) &&
                    lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    ps->p += 6;
                } else {
                    cp = 0xFFFD; /* lone high surrogate */
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD; /* lone low surrogate */
            }
            o += wd__utf8_put(o, cp);
            break;
        }
        default:
            ps->p -= 2;
            return wd__fail(ps, "bad escape in string");
        }
    }
    ps->p = q + 1;
    *o = '\0';
    *out = (const char *)buf;
    *out_len = (size_t)(o - buf);
    return 0;
}

static int wd__digit(wd__parser *ps) { return ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9'; }

static int wd__parse_number(wd__parser *ps, wd_json *v) {
    const unsigned char *s = ps->p;
    char small[64], *text;
    size_t n;
    if (ps->p < ps->end && *ps->p == '-') ps->p++;
    if (!wd__digit(ps)) return wd__fail(ps, "bad number");
    if (*ps->p == '0') {
        ps->p++;
        if (wd__digit(ps)) return wd__fail(ps, "leading zero in number");
    } else {
        while (wd__digit(ps)) ps->p++;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!wd__digit(ps)) return wd__fail(ps, "bad fraction in number");
        while (wd__digit(ps)) ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (!wd__digit(ps)) return wd__fail(ps, "bad exponent in number");
        while (wd__digit(ps)) ps->p++;
    }
    n = (size_t)(ps->p - s);
    text = n < sizeof small ? small : wd__arena_alloc(ps->doc, n + 1);
    if (!text) return wd__fail(ps, "out of memory");
    memcpy(text, s, n);
    text[n] = '\0';
    v->type = WD_JSON_NUMBER;
    v->number = strtod(text, NULL);
    return 0;
}

static int wd__literal(wd__parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return 0;
    ps->p += n;
    return 1;
}

static int wd__parse_value(wd__parser *ps, wd_json *v);

static int wd__parse_container(wd__parser *ps, wd_json *v, int object) {
    wd_json *tmp = NULL, *items;
    size_t count = 0, cap = 0;
    unsigned char close = object ? '}' : ']';
    int rc = -1;
    if (++ps->depth > WD_JSON_MAX_DEPTH) return wd__fail(ps, "nesting too deep");
    ps->p++; /* [ or { */
    wd__ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        goto done;
    }
    for (;;) {
        wd_json item;
        memset(&item, 0, sizeof item);
        wd__ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"') { wd__fail(ps, "expected a member name"); goto out; }
            if (wd__parse_string(ps, &item.key, &item.key_len) < 0) goto out;
            wd__ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') { wd__fail(ps, "expected ':'"); goto out; }
            ps->p++;
            wd__ws(ps);
        }
        {
            const char *key = item.key;
            size_t key_len = item.key_len;
            if (wd__parse_value(ps, &item) < 0) goto out;
            item.key = key;
            item.key_len = key_len;
        }
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            wd_json *bigger = realloc(tmp, ncap * sizeof *tmp);
            if (!bigger) { wd__fail(ps, "out of memory"); goto out; }
            tmp = bigger;
            cap = ncap;
        }
        tmp[count++] = item;
        wd__ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (ps->p < ps->end && *ps->p == close) { ps->p++; break; }
        wd__fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
        goto out;
    }
done:
    v->type = object ? WD_JSON_OBJECT : WD_JSON_ARRAY;
    v->count = count;
    v->items = NULL;
    if (count) {
        items = wd__arena_alloc(ps->doc, count * sizeof *items);
        if (!items) { wd__fail(ps, "out of memory"); goto out; }
        memcpy(items, tmp, count * sizeof *items);
        v->items = items;
    }
    rc = 0;
out:
    free(tmp);
    ps->depth--;
    return rc;
}

static int wd__parse_value(wd__parser *ps, wd_json *v) {
    memset(v, 0, sizeof *v);
    wd__ws(ps);
    if (ps->p >= ps->end) return wd__fail(ps, "unexpected end of input");
    switch (*ps->p) {
    case '{': return wd__parse_container(ps, v, 1);
    case '[': return wd__parse_container(ps, v, 0);
    case '"':
        v->type = WD_JSON_STRING;
        return wd__parse_string(ps, &v->string, &v->string_len);
    case 't':
        if (!wd__literal(ps, "true")) break;
        v->type = WD_JSON_BOOL;
        v->boolean = 1;
        return 0;
    case 'f':
        if (!wd__literal(ps, "false")) break;
        v->type = WD_JSON_BOOL;
        return 0;
    case 'n':
        if (!wd__literal(ps, "null")) break;
        v->type = WD_JSON_NULL;
        return 0;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) return wd__parse_number(ps, v);
    }
    return wd__fail(ps, "unexpected character");
}

static void wd__doc_free(wd__doc *doc) {
    wd__chunk *c = doc->chunks;
    while (c) {
        wd__chunk *next = c->next;
        free(c);
        c = next;
    }
    free(doc);
}

wd_json *wd_json_parse(const char *text, size_t len) {
    wd__parser ps;
    wd__doc *doc;
    if (!text) { wd__seterr("JSON: no input"); return NULL; }
    doc = calloc(1, sizeof *doc);
    if (!doc) { wd__seterr("JSON: out of memory"); return NULL; }
    memset(&ps, 0, sizeof ps);
    ps.start = ps.p = (const unsigned char *)text;
    ps.end = ps.start + len;
    ps.doc = doc;
    if (wd__parse_value(&ps, &doc->root) == 0) {
        wd__ws(&ps);
        if (ps.p == ps.end) return &doc->root;
        wd__fail(&ps, "unexpected text after the value");
    }
    wd__doc_free(doc);
    return NULL;
}

void wd_json_free(wd_json *root) {
    if (root) wd__doc_free((wd__doc *)((char *)root - offsetof(wd__doc, root)));
}

const wd_json *wd_json_get(const wd_json *object, const char *key) {
    size_t n, i;
    if (!object || object->type != WD_JSON_OBJECT || !key) return NULL;
    n = strlen(key);
    for (i = object->count; i-- > 0;) {
        const wd_json *m = &object->items[i];
        if (m->key_len == n && memcmp(m->key, key, n) == 0) return m;
    }
    return NULL;
}

const wd_json *wd_json_at(const wd_json *array, size_t index) {
    if (!array || (array->type != WD_JSON_ARRAY && array->type != WD_JSON_OBJECT)) return NULL;
    return index < array->count ? &array->items[index] : NULL;
}

const wd_json *wd_json_path(const wd_json *value, const char *path) {
    const wd_json *v = value;
    const char *p = path;
    char seg[256];
    if (!p) return v;
    while (v && *p) {
        size_t n = strcspn(p, ".");
        if (n >= sizeof seg) return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        if (v->type == WD_JSON_ARRAY) {
            char *end;
            unsigned long idx;
            if (!n || seg[0] < '0' || seg[0] > '9') return NULL;
            idx = strtoul(seg, &end, 10);
            if (*end) return NULL;
            v = wd_json_at(v, (size_t)idx);
        } else {
            v = wd_json_get(v, seg);
        }
        p += n;
        if (*p == '.') p++;
    }
    return v;
}

const char *wd_json_string(const wd_json *v, const char *fallback) {
    return v && v->type == WD_JSON_STRING ? v->string : fallback;
}

double wd_json_number(const wd_json *v, double fallback) {
    return v && v->type == WD_JSON_NUMBER ? v->number : fallback;
}

long long wd_json_int(const wd_json *v, long long fallback) {
    if (!v || v->type != WD_JSON_NUMBER || !(v->number == v->number)) return fallback;
    if (v->number >= 9.2e18 || v->number <= -9.2e18) return fallback;
    return (long long)v->number;
}

int wd_json_bool(const wd_json *v, int fallback) {
    return v && v->type == WD_JSON_BOOL ? v->boolean : fallback;
}

/* ---------------------------------------------------------- JSON: write */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t wd__utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned lo = 0x80, hi = 0xBF;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

void wd_json_quote(wd_buf *b, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    wd_buf_append(b, "\"", 1);
    while (i < n) {
        unsigned c = s[i];
        const char *esc = NULL;
        char u[8];
        size_t seq;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) { i++; run++; continue; }
        if (c >= 0x80) {
            seq = wd__utf8_seq(s + i, n - i);
            if (seq) { i += seq; run += seq; continue; }
        }
        wd_buf_append(b, s + i - run, run);
        run = 0;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            } else {
                esc = "\xEF\xBF\xBD"; /* invalid UTF-8 byte: U+FFFD */
            }
        }
        wd_buf_puts(b, esc);
        i++;
    }
    wd_buf_append(b, s + i - run, run);
    wd_buf_append(b, "\"", 1);
}

static void wd__format_number(char out[40], double x) {
    if (!(x == x) || x > 1.7976931348623157e308 || x < -1.7976931348623157e308) {
        strcpy(out, "null");
        return;
    }
    if (x == floor(x) && fabs(x) < 1e16) {
        snprintf(out, 40, "%.0f", x);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, x);
        if (strtod(out, NULL) == x) return;
    }
}

static void wd__jw_before_value(wd_jw *w) {
    if (w->failed) return;
    if (w->depth > 0) {
        int d = w->depth - 1;
        if (w->kind[d] == 'o') {
            if (!w->after_key) { w->failed = 1; return; }
        } else {
            if (w->count[d]) wd_buf_append(&w->out, ",", 1);
            w->count[d] = 1;
        }
    } else if (w->out.len) {
        w->failed = 1; /* a second top-level value */
        return;
    }
    w->after_key = 0;
}

static void wd__jw_check(wd_jw *w) {
    if (w->out.failed) w->failed = 1;
}

static void wd__jw_begin(wd_jw *w, unsigned char kind) {
    wd__jw_before_value(w);
    if (w->failed) return;
    if (w->depth >= WD_JSON_MAX_DEPTH) { w->failed = 1; return; }
    w->kind[w->depth] = kind;
    w->count[w->depth] = 0;
    w->depth++;
    wd_buf_append(&w->out, kind == 'o' ? "{" : "[", 1);
    wd__jw_check(w);
}

static void wd__jw_end(wd_jw *w, unsigned char kind) {
    if (w->failed) return;
    if (w->depth == 0 || w->kind[w->depth - 1] != kind || w->after_key) { w->failed = 1; return; }
    w->depth--;
    wd_buf_append(&w->out, kind == 'o' ? "}" : "]", 1);
    wd__jw_check(w);
}

void wd_jw_begin_object(wd_jw *w) { wd__jw_begin(w, 'o'); }
void wd_jw_end_object(wd_jw *w) { wd__jw_end(w, 'o'); }
void wd_jw_begin_array(wd_jw *w) { wd__jw_begin(w, 'a'); }
void wd_jw_end_array(wd_jw *w) { wd__jw_end(w, 'a'); }

void wd_jw_keyn(wd_jw *w, const char *key, size_t n) {
    int d;
    if (w->failed) return;
    d = w->depth - 1;
    if (d < 0 || w->kind[d] != 'o' || w->after_key) { w->failed = 1; return; }
    if (w->count[d]) wd_buf_append(&w->out, ",", 1);
    w->count[d] = 1;
    wd_json_quote(&w->out, key, n);
    wd_buf_append(&w->out, ":", 1);
    w->after_key = 1;
    wd__jw_check(w);
}

void wd_jw_key(wd_jw *w, const char *key) { wd_jw_keyn(w, key ? key : "", key ? strlen(key) : 0); }

void wd_jw_stringn(wd_jw *w, const char *s, size_t n) {
    wd__jw_before_value(w);
    if (w->failed) return;
    wd_json_quote(&w->out, s, n);
    wd__jw_check(w);
}

void wd_jw_string(wd_jw *w, const char *s) {
    if (!s) { wd_jw_null(w); return; }
    wd_jw_stringn(w, s, strlen(s));
}

void wd_jw_number(wd_jw *w, double x) {
    char buf[40];
    wd__jw_before_value(w);
    if (w->failed) return;
    wd__format_number(buf, x);
    wd_buf_puts(&w->out, buf);
    wd__jw_check(w);
}

void wd_jw_int(wd_jw *w, long long x) {
    wd__jw_before_value(w);
    if (w->failed) return;
    wd_buf_printf(&w->out, "%lld", x);
    wd__jw_check(w);
}

void wd_jw_bool(wd_jw *w, int b) {
    wd__jw_before_value(w);
    if (w->failed) return;
    wd_buf_puts(&w->out, b ? "true" : "false");
    wd__jw_check(w);
}

void wd_jw_null(wd_jw *w) {
    wd__jw_before_value(w);
    if (w->failed) return;
    wd_buf_puts(&w->out, "null");
    wd__jw_check(w);
}

void wd_jw_raw(wd_jw *w, const char *json, size_t n) {
    wd__jw_before_value(w);
    if (w->failed) return;
    wd_buf_append(&w->out, json, n);
    wd__jw_check(w);
}

void wd_jw_value(wd_jw *w, const wd_json *v) {
    size_t i;
    if (!v) { wd_jw_null(w); return; }
    switch (v->type) {
    case WD_JSON_NULL: wd_jw_null(w); break;
    case WD_JSON_BOOL: wd_jw_bool(w, v->boolean); break;
    case WD_JSON_NUMBER: wd_jw_number(w, v->number); break;
    case WD_JSON_STRING: wd_jw_stringn(w, v->string, v->string_len); break;
    case WD_JSON_ARRAY:
        wd_jw_begin_array(w);
        for (i = 0; i < v->count; i++) wd_jw_value(w, &v->items[i]);
        wd_jw_end_array(w);
        break;
    case WD_JSON_OBJECT:
        wd_jw_begin_object(w);
        for (i = 0; i < v->count; i++) {
            wd_jw_keyn(w, v->items[i].key, v->items[i].key_len);
            wd_jw_value(w, &v->items[i]);
        }
        wd_jw_end_object(w);
        break;
    }
}

void wd_jw_free(wd_jw *w) {
    wd_buf_free(&w->out);
    w->depth = 0;
    w->failed = 0;
    w->after_key = 0;
}

char *wd_json_serialize(const wd_json *v, size_t *len) {
    wd_jw *w = calloc(1, sizeof *w);
    char *out;
    if (!w) return NULL;
    wd_jw_value(w, v);
    if (w->failed || w->depth) {
        wd__seterr("JSON: could not serialise the value");
        wd_jw_free(w);
        free(w);
        return NULL;
    }
    out = w->out.data;
    if (len) *len = w->out.len;
    free(w);
    return out;
}

/* ------------------------------------------------------------- headers */

int wd_headers_add(wd_headers *h, const char *name, const char *value) {
    char *n, *v;
    if (!name || !value) { wd__seterr("a header needs a name and a value"); return WD_EINVAL; }
    if (h->count == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        wd_header *items = realloc(h->items, cap * sizeof *items);
        if (!items) { wd__seterr("out of memory"); return WD_ENOMEM; }
        h->items = items;
        h->cap = cap;
    }
    n = wd__strdup(name);
    v = wd__strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        wd__seterr("out of memory");
        return WD_ENOMEM;
    }
    h->items[h->count].name = n;
    h->items[h->count].value = v;
    h->count++;
    return WD_OK;
}

size_t wd_headers_remove(wd_headers *h, const char *name) {
    size_t i, j = 0, removed = 0;
    for (i = 0; i < h->count; i++) {
        if (wd__ieq(h->items[i].name, name)) {
            free(h->items[i].name);
            free(h->items[i].value);
            removed++;
        } else {
            h->items[j++] = h->items[i];
        }
    }
    h->count = j;
    return removed;
}

int wd_headers_set(wd_headers *h, const char *name, const char *value) {
    if (!name || !value) { wd__seterr("a header needs a name and a value"); return WD_EINVAL; }
    wd_headers_remove(h, name);
    return wd_headers_add(h, name, value);
}

const char *wd_headers_get_nth(const wd_headers *h, const char *name, size_t n) {
    size_t i;
    if (!h || !name) return NULL;
    for (i = 0; i < h->count; i++)
        if (wd__ieq(h->items[i].name, name) && n-- == 0) return h->items[i].value;
    return NULL;
}

const char *wd_headers_get(const wd_headers *h, const char *name) { return wd_headers_get_nth(h, name, 0); }

int wd_headers_copy(wd_headers *dst, const wd_headers *src) {
    size_t i;
    for (i = 0; src && i < src->count; i++) {
        int rc = wd_headers_add(dst, src->items[i].name, src->items[i].value);
        if (rc != WD_OK) return rc;
    }
    return WD_OK;
}

void wd_headers_free(wd_headers *h) {
    size_t i;
    for (i = 0; i < h->count; i++) {
        free(h->items[i].name);
        free(h->items[i].value);
    }
    free(h->items);
    h->items = NULL;
    h->count = h->cap = 0;
}

/* Fill `h` from a JSON array of [name, value] pairs (others are skipped). */
static int wd__headers_from_json(wd_headers *h, const wd_json *arr) {
    size_t i;
    if (!arr || arr->type != WD_JSON_ARRAY) return WD_OK;
    for (i = 0; i < arr->count; i++) {
        const wd_json *pair = &arr->items[i];
        const char *name = wd_json_string(wd_json_at(pair, 0), NULL);
        const char *value = wd_json_string(wd_json_at(pair, 1), NULL);
        if (pair->type != WD_JSON_ARRAY || !name || !value) continue;
        if (wd_headers_add(h, name, value) != WD_OK) return WD_ENOMEM;
    }
    return WD_OK;
}

static void wd__headers_to_json(wd_jw *w, const wd_headers *h) {
    size_t i;
    wd_jw_begin_array(w);
    for (i = 0; h && i < h->count; i++) {
        wd_jw_begin_array(w);
        wd_jw_string(w, h->items[i].name);
        wd_jw_string(w, h->items[i].value);
        wd_jw_end_array(w);
    }
    wd_jw_end_array(w);
}

/* ----------------------------------------------------------------- URLs */

static int wd__hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *wd_url_decode(const char *s, size_t n, size_t *out_len) {
    char *out = malloc(n + 1);
    size_t i, j = 0;
    if (!out) return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[j++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && wd__hexval((unsigned char)s[i + 1]) >= 0 &&
                   wd__hexval((unsigned char)s[i + 2]) >= 0) {
            out[j++] = (char)(wd__hexval((unsigned char)s[i + 1]) * 16 + wd__hexval((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[j++] = s[i];
        }
    }
    out[j] = '\0';
    if (out_len) *out_len = j;
    return out;
}

/* The authority part of a URL: [start, end). */
static int wd__url_authority(const char *url, const char **start, const char **end) {
    const char *p = strstr(url, "://");
    if (!p) return 0;
    p += 3;
    *start = p;
    *end = p + strcspn(p, "/?#");
    return 1;
}

char *wd_url_host(const char *url) {
    const char *a, *e, *at, *h;
    char *out;
    size_t i, n;
    if (!url || !wd__url_authority(url, &a, &e)) return wd__strdup("");
    for (at = e; at > a; at--)
        if (at[-1] == '@') break;
    h = at > a ? at : a;
    if (*h == '[') {
        const char *close = memchr(h, ']', (size_t)(e - h));
        n = close ? (size_t)(close - h) + 1 : (size_t)(e - h);
    } else {
        const char *colon = memchr(h, ':', (size_t)(e - h));
        n = colon ? (size_t)(colon - h) : (size_t)(e - h);
    }
    out = wd__strndup(h, n);
    for (i = 0; out && out[i]; i++) out[i] = (char)wd__lower((unsigned char)out[i]);
    return out;
}

char *wd_url_path(const char *url) {
    const char *a, *end, *p = url;
    size_t n;
    if (!url) return wd__strdup("/");
    if (wd__url_authority(url, &a, &end)) p = end;
    n = strcspn(p, "?#");
    if (n == 0) return wd__strdup("/");
    return wd__strndup(p, n);
}

char *wd_url_query(const char *url, const char *name, size_t n) {
    const char *q;
    size_t name_len;
    if (!url || !name) return NULL;
    q = strchr(url, '?');
    if (!q) return NULL;
    q++;
    name_len = strlen(name);
    while (*q && *q != '#') {
        size_t len = strcspn(q, "&#");
        size_t key_len = strcspn(q, "=&#");
        size_t klen;
        char *key = wd_url_decode(q, key_len, &klen);
        int match = key && klen == name_len && memcmp(key, name, name_len) == 0;
        free(key);
        if (match && n-- == 0) {
            if (key_len >= len) return wd__strdup("");
            return wd_url_decode(q + key_len + 1, len - key_len - 1, NULL);
        }
        q += len;
        if (*q == '&') q++;
    }
    return NULL;
}

int wd_url_port(const char *url) {
    const char *a, *e, *h, *colon;
    if (!url || !wd__url_authority(url, &a, &e)) return 0;
    for (h = e; h > a && h[-1] != '@'; h--) {}
    if (*h == '[') {
        const char *close = memchr(h, ']', (size_t)(e - h));
        colon = close && close + 1 < e && close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(e - h));
    }
    if (colon && colon + 1 < e) {
        int port = 0;
        for (const char *p = colon + 1; p < e; p++) {
            if (*p < '0' || *p > '9' || port > 65535) return 0;
            port = port * 10 + (*p - '0');
        }
        return port;
    }
    if (strncmp(url, "https:", 6) == 0 || strncmp(url, "HTTPS:", 6) == 0) return 443;
    if (strncmp(url, "http:", 5) == 0 || strncmp(url, "HTTP:", 5) == 0) return 80;
    return 0;
}

static int wd__match_entry(const char *host, int port, const char *pat, size_t n) {
    size_t host_len = n, i, hl = strlen(host);
    int want_port = -1;
    while (n && (*pat == ' ' || *pat == '\t')) pat++, n--;
    while (n && (pat[n - 1] == ' ' || pat[n - 1] == '\t')) n--;
    if (!n) return 0;
    host_len = n;
    {
        const char *scan = pat;
        size_t scan_n = n;
        if (pat[0] == '[') {
            const char *close = memchr(pat, ']', n);
            if (!close) return 0;
            scan = close;
            scan_n = n - (size_t)(close - pat);
        }
        const char *colon = memchr(scan, ':', scan_n);
        if (colon) {
            want_port = 0;
            host_len = (size_t)(colon - pat);
            for (const char *p = colon + 1; p < pat + n; p++) {
                if (*p < '0' || *p > '9' || want_port > 65535) return 0;
                want_port = want_port * 10 + (*p - '0');
            }
            if (colon + 1 == pat + n) return 0;
        }
    }
    if (want_port >= 0 && want_port != port) return 0;
    if (host_len == 1 && pat[0] == '*') return 1;
    if (host_len > 2 && pat[0] == '*' && pat[1] == '.') {
        if (host[0] == '[' || strspn(host, "0123456789.") == hl) return 0; /* an IP address has no subdomains */
        size_t suffix = host_len - 1; /* ".example.com" */
        if (hl <= suffix) return 0;
        for (i = 0; i < suffix; i++)
            if (wd__lower((unsigned char)host[hl - suffix + i]) != wd__lower((unsigned char)pat[1 + i])) return 0;
        return 1;
    }
    if (hl != host_len) return 0;
    for (i = 0; i < hl; i++)
        if (wd__lower((unsigned char)host[i]) != wd__lower((unsigned char)pat[i])) return 0;
    return 1;
}

int wd_url_matches(const char *url, const char *pattern) {
    char *host;
    int ok;
    if (!url || !pattern) return 0;
    host = wd_url_host(url);
    ok = host && *host && wd__match_entry(host, wd_url_port(url), pattern, strlen(pattern));
    free(host);
    return ok;
}

int wd_url_matches_list(const char *url, const char *list) {
    char *host;
    int port, ok = 0;
    if (!url || !list) return 0;
    host = wd_url_host(url);
    port = wd_url_port(url);
    while (host && *host && *list && !ok) {
        size_t n = strcspn(list, ",");
        ok = wd__match_entry(host, port, list, n);
        list += n;
        if (*list == ',') list++;
    }
    free(host);
    return ok;
}

const char *wd_request_header(const wd_request *req, const char *name) {
    return req ? wd_headers_get(&req->headers, name) : NULL;
}

char *wd_request_query_nth(const wd_request *req, const char *name, size_t n) {
    return req ? wd_url_query(req->url, name, n) : NULL;
}

char *wd_request_query(const wd_request *req, const char *name) { return wd_request_query_nth(req, name, 0); }

char *wd_request_path(const wd_request *req) { return wd_url_path(req ? req->url : NULL); }

char *wd_request_host(const wd_request *req) {
    char *host = wd_url_host(req ? req->url : NULL);
    if (host && !*host && req) {
        const char *h = wd_request_header(req, "host");
        if (h) {
            size_t i, n = h[0] == '[' ? strcspn(h, "]") + (strchr(h, ']') ? 1 : 0) : strcspn(h, ":");
            free(host);
            host = wd__strndup(h, n);
            for (i = 0; host && host[i]; i++) host[i] = (char)wd__lower((unsigned char)host[i]);
        }
    }
    return host;
}

/* wd_env lives after the serve state (it reads the event's `env`). */

/* --------------------------------------------------------------- frames */

static int wd__read_all(void *buf, size_t n, int *eof_at_start) {
    unsigned char *p = buf;
    size_t got = 0;
    if (eof_at_start) *eof_at_start = 0;
    while (got < n) {
        ssize_t r = read(0, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            wd__seterr("reading stdin failed: %s", strerror(errno));
            return WD_EIO;
        }
        if (r == 0) {
            if (got == 0 && eof_at_start) *eof_at_start = 1;
            wd__seterr(got ? "stdin ended in the middle of a frame" : "stdin ended");
            return WD_EIO;
        }
        got += (size_t)r;
    }
    return WD_OK;
}

static int wd__writev_all(struct iovec *iov, int n) {
    int i = 0;
    while (i < n && iov[i].iov_len == 0) i++;
    while (i < n) {
        ssize_t w = writev(1, iov + i, n - i);
        size_t left;
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            wd__seterr("writing stdout failed: %s", strerror(errno));
            return WD_EIO;
        }
        if (w == 0) {
            wd__seterr("writing stdout failed: nothing was written");
            return WD_EIO;
        }
        left = (size_t)w;
        while (i < n && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            i++;
        }
        if (i < n) {
            iov[i].iov_base = (char *)iov[i].iov_base + left;
            iov[i].iov_len -= left;
        }
        while (i < n && iov[i].iov_len == 0) i++;
    }
    return WD_OK;
}

static void wd__put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v & 0xFF);
    p[1] = (unsigned char)((v >> 8) & 0xFF);
    p[2] = (unsigned char)((v >> 16) & 0xFF);
    p[3] = (unsigned char)((v >> 24) & 0xFF);
}

static uint32_t wd__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Version 2: log frames wait here and leave in the same write as the next frame (a call, the
 * final frame): one write, so one read for the engine, instead of one per log line.  At most
 * WD__HOLD_BYTES wait; anything written at exit() goes out then. */
#define WD__HOLD_BYTES 65536u
static wd_buf wd__held;

static void wd__flush_held(void) {
    struct iovec iov[1];
    if (!wd__held.len) return;
    iov[0].iov_base = wd__held.data;
    iov[0].iov_len = wd__held.len;
    (void)wd__writev_all(iov, 1);
    wd__held.len = 0;
}

int wd_frame_write(const char *meta, size_t meta_len, const void *body, size_t body_len) {
    unsigned char head[8];
    struct iovec iov[4];
    int rc;
    if (meta_len > WD_MAX_META_BYTES) {
        wd__seterr("frame meta of %zu bytes is over the %u-byte limit", meta_len, WD_MAX_META_BYTES);
        return WD_ETOOBIG;
    }
    if (body_len > WD_MAX_BODY_BYTES) {
        wd__seterr("frame body of %zu bytes is over the %u-byte limit", body_len, WD_MAX_BODY_BYTES);
        return WD_ETOOBIG;
    }
    wd__put_u32(head, (uint32_t)meta_len);
    wd__put_u32(head + 4, (uint32_t)body_len);
    iov[0].iov_base = wd__held.data;
    iov[0].iov_len = wd__held.len;
    iov[1].iov_base = head;
    iov[1].iov_len = 8;
    iov[2].iov_base = (void *)meta;
    iov[2].iov_len = meta_len;
    iov[3].iov_base = (void *)body;
    iov[3].iov_len = body ? body_len : 0;
    rc = wd__writev_all(iov, 4);
    wd__held.len = 0;
    return rc;
}

/* Set when the last wd_frame_read found stdin ended before a frame started. */
static int wd__input_ended;

int wd_frame_read(wd_frame *frame) {
    unsigned char head[8];
    uint32_t meta_len, body_len;
    char *meta;
    int rc;
    memset(frame, 0, sizeof *frame);
    rc = wd__read_all(head, 8, &wd__input_ended);
    if (rc != WD_OK) return rc;
    meta_len = wd__get_u32(head);
    body_len = wd__get_u32(head + 4);
    if (meta_len > WD_MAX_META_BYTES || body_len > WD_MAX_BODY_BYTES) {
        wd__seterr("received a frame over the limits (meta %u bytes, body %u bytes)", meta_len, body_len);
        return WD_ETOOBIG;
    }
    meta = malloc((size_t)meta_len + 1);
    frame->body = malloc((size_t)body_len + 1);
    if (!meta || !frame->body) {
        free(meta);
        free(frame->body);
        frame->body = NULL;
        wd__seterr("out of memory reading a frame");
        return WD_ENOMEM;
    }
    rc = wd__read_all(meta, meta_len, NULL);
    if (rc == WD_OK) rc = wd__read_all(frame->body, body_len, NULL);
    if (rc != WD_OK) {
        free(meta);
        free(frame->body);
        frame->body = NULL;
        return rc;
    }
    frame->body[body_len] = '\0';
    frame->body_len = body_len;
    frame->meta = wd_json_parse(meta, meta_len);
    free(meta);
    if (!frame->meta || frame->meta->type != WD_JSON_OBJECT ||
        !wd_json_string(wd_json_get(frame->meta, "type"), NULL)) {
        if (frame->meta) wd__seterr("received a frame whose meta has no string \"type\"");
        else {
            char why[sizeof wd__err];
            memcpy(why, wd__err, sizeof why);
            wd__seterr("received a frame whose meta is not JSON (%.200s)", why);
        }
        wd_frame_free(frame);
        return WD_EPROTO;
    }
    frame->type = wd_json_string(wd_json_get(frame->meta, "type"), "");
    return WD_OK;
}

void wd_frame_free(wd_frame *frame) {
    wd_json_free(frame->meta);
    free(frame->body);
    memset(frame, 0, sizeof *frame);
}

/* ---------------------------------------------------------------- state */

enum { WD__IDLE, WD__FETCH, WD__TAIL, WD__DONE };

static int wd__state = WD__IDLE;
static long wd__next_id = 1;
static wd_frame wd__event;
static int wd__warm;    /* serving a version 2 instance: the engine sent init */
static int wd__retire;  /* version 2: the final frame says "retire": true */

const char *wd_env(const char *name, const char *fallback) {
    const char *v = wd_json_string(wd_json_get(wd_json_get(wd__event.meta, "env"), name), NULL);
    if (!v) v = getenv(name);
    return v && *v ? v : fallback;
}

long wd_invocation(void) { return (long)wd_json_int(wd_json_get(wd__event.meta, "invocation"), 1); }

void wd_retire(void) {
    if (wd__warm) wd__retire = 1;
}

/* The `"retire":true` member of a final frame, when the instance retires with it. */
static void wd__retire_member(wd_jw *w) {
    if (wd__retire) {
        wd_jw_key(w, "retire");
        wd_jw_bool(w, 1);
    }
}

const wd_json *wd_event_meta(void) { return wd__event.meta; }
const char *wd_worker_name(void) { return wd_json_string(wd_json_get(wd__event.meta, "worker"), ""); }
const char *wd_namespace_name(void) { return wd_json_string(wd_json_get(wd__event.meta, "namespace"), ""); }

/* Write a frame whose meta is w's JSON; frees w. */
static int wd__send(wd_jw *w, const void *body, size_t body_len) {
    int rc;
    if (w->failed || w->depth) {
        rc = w->out.failed ? WD_ENOMEM : WD_EINVAL;
        wd__seterr(rc == WD_ENOMEM ? "out of memory building a frame" : "internal error building a frame");
        wd_jw_free(w);
        return rc;
    }
    rc = wd_frame_write(w->out.data, w->out.len, body, body_len);
    wd_jw_free(w);
    return rc;
}

static const char *wd__level_name(wd_level level) {
    switch (level) {
    case WD_DEBUG: return "debug";
    case WD_INFO: return "info";
    case WD_WARN: return "warn";
    case WD_ERROR: return "error";
    default: return "log";
    }
}

/* Cut s to at most max bytes without splitting a UTF-8 sequence. */
static size_t wd__cut_utf8(const char *s, size_t len, size_t max) {
    if (len <= max) return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return max;
}

int wd_vlog(wd_level level, const char *fmt, va_list ap) {
    wd_buf msg = {0};
    wd_jw w;
    int rc;
    if (wd__state != WD__FETCH && wd__state != WD__TAIL) {
        wd__seterr("wd_log is only allowed while handling an event, before its final frame");
        return WD_ESTATE;
    }
    wd_buf_vprintf(&msg, fmt, ap);
    if (msg.failed) { wd_buf_free(&msg); wd__seterr("out of memory formatting a log message"); return WD_ENOMEM; }
    memset(&w, 0, sizeof w);
    wd_jw_begin_object(&w);
    wd_jw_key(&w, "type");
    wd_jw_string(&w, "log");
    wd_jw_key(&w, "level");
    wd_jw_string(&w, wd__level_name(level));
    wd_jw_key(&w, "message");
    wd_jw_stringn(&w, msg.data ? msg.data : "", msg.data ? wd__cut_utf8(msg.data, msg.len, WD_MAX_LOG_BYTES) : 0);
    wd_jw_end_object(&w);
    wd_buf_free(&msg);
    if (wd__warm && !w.failed && !w.depth && 8 + w.out.len <= WD__HOLD_BYTES) {
        unsigned char head[8];
        if (wd__held.len + 8 + w.out.len > WD__HOLD_BYTES) wd__flush_held();
        wd__put_u32(head, (uint32_t)w.out.len);
        wd__put_u32(head + 4, 0);
        wd_buf_append(&wd__held, head, 8);
        wd_buf_append(&wd__held, w.out.data, w.out.len);
        wd_jw_free(&w);
        if (wd__held.failed) {
            wd_buf_free(&wd__held);
            wd__seterr("out of memory holding a log frame");
            return WD_ENOMEM;
        }
        return WD_OK;
    }
    rc = wd__send(&w, NULL, 0);
    return rc;
}

int wd_log(wd_level level, const char *fmt, ...) {
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = wd_vlog(level, fmt, ap);
    va_end(ap);
    return rc;
}

void wd_throw(const char *name, const char *fmt, ...) {
    wd_buf msg = {0};
    wd_jw w;
    va_list ap;
    va_start(ap, fmt);
    wd_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    if (!name || !*name) name = "Error";
    if (wd__state == WD__DONE) {
        fprintf(stderr, "error: %s: %s\n", name, msg.data ? msg.data : "");
        exit(1);
    }
    memset(&w, 0, sizeof w);
    wd_jw_begin_object(&w);
    wd_jw_key(&w, "type");
    wd_jw_string(&w, "exception");
    wd_jw_key(&w, "name");
    wd_jw_stringn(&w, name, wd__cut_utf8(name, strlen(name), 1024));
    wd_jw_key(&w, "message");
    wd_jw_stringn(&w, msg.data ? msg.data : "", msg.data ? wd__cut_utf8(msg.data, msg.len, WD_MAX_LOG_BYTES) : 0);
    if (wd__warm) wd__retire = 1; /* the process exits below: C cannot unwind back to the serve loop */
    wd__retire_member(&w);
    wd_jw_end_object(&w);
    wd__state = WD__DONE;
    if (wd__send(&w, NULL, 0) != WD_OK) {
        fprintf(stderr, "error: %s: %s (the exception frame could not be sent: %s)\n", name,
                msg.data ? msg.data : "", wd__err);
        exit(1);
    }
    exit(0);
}

/* ------------------------------------------------------------- responses */

static int wd__body_reserve(unsigned char **body, size_t *len, size_t *cap, size_t extra) {
    size_t need, ncap;
    unsigned char *p;
    if (extra > (size_t)-1 - *len - 1) return WD_ENOMEM;
    need = *len + extra + 1;
    if (need <= *cap) return WD_OK;
    ncap = *cap ? *cap : 256;
    while (ncap < need) ncap = ncap > ((size_t)-1) / 2 ? need : ncap * 2;
    p = realloc(*body, ncap);
    if (!p) { wd__seterr("out of memory growing a response body"); return WD_ENOMEM; }
    *body = p;
    *cap = ncap;
    return WD_OK;
}

int wd_response_write(wd_response *res, const void *data, size_t n) {
    int rc = wd__body_reserve(&res->body, &res->body_len, &res->body_cap, n);
    if (rc != WD_OK) return rc;
    if (n) memcpy(res->body + res->body_len, data, n);
    res->body_len += n;
    res->body[res->body_len] = '\0';
    return WD_OK;
}

int wd_response_print(wd_response *res, const char *s) { return wd_response_write(res, s, strlen(s)); }

int wd_response_printf(wd_response *res, const char *fmt, ...) {
    wd_buf b = {0};
    va_list ap;
    int rc;
    va_start(ap, fmt);
    wd_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (b.failed) { wd_buf_free(&b); wd__seterr("out of memory formatting"); return WD_ENOMEM; }
    rc = wd_response_write(res, b.data, b.len);
    wd_buf_free(&b);
    return rc;
}

int wd_response_header(wd_response *res, const char *name, const char *value) {
    return wd_headers_add(&res->headers, name, value);
}

int wd_response_set_header(wd_response *res, const char *name, const char *value) {
    return wd_headers_set(&res->headers, name, value);
}

int wd_response_text(wd_response *res, int status, const char *text) {
    res->status = status;
    if (!wd_headers_get(&res->headers, "content-type")) {
        int rc = wd_headers_add(&res->headers, "content-type", "text/plain");
        if (rc != WD_OK) return rc;
    }
    res->body_len = 0;
    return wd_response_print(res, text ? text : "");
}

void wd_response_free(wd_response *res) {
    wd_headers_free(&res->headers);
    free(res->body);
    res->body = NULL;
    res->body_len = res->body_cap = 0;
}

int wd_respond(const wd_response *res) {
    wd_jw w;
    int rc;
    if (wd__state != WD__FETCH) {
        wd__seterr(wd__state == WD__DONE ? "the event was already answered"
                                         : "a response answers a fetch event only");
        return WD_ESTATE;
    }
    if (res->status < 100 || res->status > 599) {
        wd__seterr("response status %d is not between 100 and 599", res->status);
        return WD_EINVAL;
    }
    if (res->body_len > WD_MAX_BODY_BYTES) {
        wd__seterr("response body of %zu bytes is over the %u-byte frame limit", res->body_len, WD_MAX_BODY_BYTES);
        return WD_ETOOBIG;
    }
    memset(&w, 0, sizeof w);
    wd_jw_begin_object(&w);
    wd_jw_key(&w, "type");
    wd_jw_string(&w, "response");
    wd_jw_key(&w, "status");
    wd_jw_int(&w, res->status);
    wd_jw_key(&w, "headers");
    wd__headers_to_json(&w, &res->headers);
    wd__retire_member(&w);
    wd_jw_end_object(&w);
    if (!w.failed && w.out.len > WD_MAX_META_BYTES) {
        wd__seterr("response headers of %zu bytes are over the %u-byte frame limit", w.out.len, WD_MAX_META_BYTES);
        wd_jw_free(&w);
        return WD_ETOOBIG;
    }
    rc = wd__send(&w, res->body, res->body_len);
    if (rc == WD_OK) wd__state = WD__DONE;
    return rc;
}

/* ------------------------------------------------------------------ calls */

static void wd__result_error(wd_result *out, const char *name, const char *message) {
    out->ok = 0;
    free(out->error_name);
    free(out->error_message);
    out->error_name = wd__strdup(name);
    out->error_message = wd__strdup(message);
}

static void wd__request_to_json(wd_jw *w, const wd_request *req) {
    wd_jw_begin_object(w);
    wd_jw_key(w, "method");
    wd_jw_string(w, req->method && *req->method ? req->method : "GET");
    wd_jw_key(w, "url");
    wd_jw_string(w, req->url);
    wd_jw_key(w, "headers");
    wd__headers_to_json(w, &req->headers);
    wd_jw_end_object(w);
}

/* Send the call in w (meta), read one answer, fill `out`. */
static int wd__call(wd_jw *w, long id, const wd_request *body_of, const char *ok_type, const char *err_type,
                    wd_result *out) {
    wd_frame answer;
    int rc;
    const void *body = body_of ? body_of->body : NULL;
    size_t body_len = body_of ? body_of->body_len : 0;
    if (!w->failed && w->out.len > WD_MAX_META_BYTES) {
        wd__seterr("the call's meta (%zu bytes) is over the %u-byte frame limit", w->out.len, WD_MAX_META_BYTES);
        wd_jw_free(w);
        wd__result_error(out, "RequestTooLarge", wd__err);
        return WD_ETOOBIG;
    }
    if (body_len > WD_MAX_BODY_BYTES) {
        wd__seterr("request body of %zu bytes is over the %u-byte frame limit", body_len, WD_MAX_BODY_BYTES);
        wd_jw_free(w);
        wd__result_error(out, "RequestTooLarge", wd__err);
        return WD_ETOOBIG;
    }
    rc = wd__send(w, body, body_len);
    if (rc != WD_OK) {
        wd__result_error(out, rc == WD_ENOMEM ? "OutOfMemory" : "ProtocolError", wd__err);
        return rc;
    }
    rc = wd_frame_read(&answer);
    if (rc != WD_OK) {
        char why[sizeof wd__err];
        memcpy(why, wd__err, sizeof why);
        wd__seterr("no answer to the call: %.200s", why);
        wd__result_error(out, rc == WD_ENOMEM ? "OutOfMemory" : "ProtocolError", wd__err);
        return rc;
    }
    if (wd_json_int(wd_json_get(answer.meta, "id"), -1) != id) {
        wd__seterr("the answer's id %lld is not the call's id %ld",
                   wd_json_int(wd_json_get(answer.meta, "id"), -1), id);
        wd__result_error(out, "ProtocolError", wd__err);
        wd_frame_free(&answer);
        return WD_EPROTO;
    }
    if (strcmp(answer.type, ok_type) == 0) {
        const char *outcome = wd_json_string(wd_json_get(answer.meta, "outcome"), NULL);
        out->ok = 1;
        out->status = (int)wd_json_int(wd_json_get(answer.meta, "status"), 0);
        if (wd__headers_from_json(&out->headers, wd_json_get(answer.meta, "headers")) != WD_OK) {
            wd__seterr("out of memory reading the answer's headers");
            wd__result_error(out, "OutOfMemory", wd__err);
            wd_frame_free(&answer);
            return WD_ENOMEM;
        }
        out->outcome = outcome ? wd__strdup(outcome) : NULL;
        out->body = answer.body;
        out->body_len = answer.body_len;
        answer.body = NULL;
        wd_frame_free(&answer);
        return WD_OK;
    }
    if (strcmp(answer.type, err_type) == 0) {
        wd__result_error(out, wd_json_string(wd_json_get(answer.meta, "name"), "Error"),
                         wd_json_string(wd_json_get(answer.meta, "message"), ""));
        wd__seterr("%s: %s", out->error_name ? out->error_name : "", out->error_message ? out->error_message : "");
        wd_frame_free(&answer);
        return WD_EFAILED;
    }
    wd__seterr("expected %s or %s, got a \"%s\" frame", ok_type, err_type, answer.type);
    wd__result_error(out, "ProtocolError", wd__err);
    wd_frame_free(&answer);
    return WD_EPROTO;
}

static int wd__call_allowed(wd_result *out, const char *what) {
    memset(out, 0, sizeof *out);
    if (wd__state != WD__FETCH && wd__state != WD__TAIL) {
        wd__seterr("%s is only allowed while handling an event, before its final frame", what);
        wd__result_error(out, "InvalidState", wd__err);
        return WD_ESTATE;
    }
    return WD_OK;
}

int wd_fetch(const wd_request *req, wd_result *out) {
    wd_jw w;
    long id;
    int rc = wd__call_allowed(out, "wd_fetch");
    if (rc != WD_OK) return rc;
    if (!req || !req->url) {
        wd__seterr("wd_fetch needs a request with a url");
        wd__result_error(out, "InvalidRequest", wd__err);
        return WD_EINVAL;
    }
    id = wd__next_id++;
    memset(&w, 0, sizeof w);
    wd_jw_begin_object(&w);
    wd_jw_key(&w, "type");
    wd_jw_string(&w, "fetch");
    wd_jw_key(&w, "id");
    wd_jw_int(&w, id);
    wd_jw_key(&w, "request");
    wd__request_to_json(&w, req);
    wd_jw_end_object(&w);
    return wd__call(&w, id, req, "fetch_result", "fetch_error", out);
}

int wd_fetch_url(const char *method, const char *url, wd_result *out) {
    wd_request req;
    memset(&req, 0, sizeof req);
    req.method = method;
    req.url = url;
    return wd_fetch(&req, out);
}

int wd_dispatch(const char *name, const wd_dispatch_options *options, const wd_request *req, wd_result *out) {
    wd_jw w;
    long id;
    int rc = wd__call_allowed(out, "wd_dispatch");
    if (rc != WD_OK) return rc;
    if (!name) {
        wd__seterr("wd_dispatch needs a worker name");
        wd__result_error(out, "InvalidRequest", wd__err);
        return WD_EINVAL;
    }
    if (req && !req->url) {
        wd__seterr("wd_dispatch: the request needs a url");
        wd__result_error(out, "InvalidRequest", wd__err);
        return WD_EINVAL;
    }
    id = wd__next_id++;
    memset(&w, 0, sizeof w);
    wd_jw_begin_object(&w);
    wd_jw_key(&w, "type");
    wd_jw_string(&w, "dispatch");
    wd_jw_key(&w, "id");
    wd_jw_int(&w, id);
    wd_jw_key(&w, "name");
    wd_jw_string(&w, name);
    if (options && (options->cpu_ms >= 0 || options->sub_requests >= 0 || options->outbound.count)) {
        size_t i;
        wd_jw_key(&w, "options");
        wd_jw_begin_object(&w);
        if (options->cpu_ms >= 0 || options->sub_requests >= 0) {
            wd_jw_key(&w, "limits");
            wd_jw_begin_object(&w);
            if (options->cpu_ms >= 0) {
                wd_jw_key(&w, "cpuMs");
                wd_jw_int(&w, options->cpu_ms);
            }
            if (options->sub_requests >= 0) {
                wd_jw_key(&w, "subRequests");
                wd_jw_int(&w, options->sub_requests);
            }
            wd_jw_end_object(&w);
        }
        if (options->outbound.count) {
            wd_jw_key(&w, "outbound");
            wd_jw_begin_object(&w);
            for (i = 0; i < options->outbound.count; i++) {
                wd_jw_key(&w, options->outbound.items[i].name);
                wd_jw_string(&w, options->outbound.items[i].value);
            }
            wd_jw_end_object(&w);
        }
        wd_jw_end_object(&w);
    }
    if (req) {
        wd_jw_key(&w, "request");
        wd__request_to_json(&w, req);
    }
    wd_jw_end_object(&w);
    return wd__call(&w, id, req, "dispatch_result", "dispatch_error", out);
}

void wd_result_free(wd_result *r) {
    wd_headers_free(&r->headers);
    free(r->body);
    free(r->outcome);
    free(r->error_name);
    free(r->error_message);
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------- serve */

static int wd__send_done(void) {
    wd_jw w;
    int rc;
    memset(&w, 0, sizeof w);
    wd_jw_begin_object(&w);
    wd_jw_key(&w, "type");
    wd_jw_string(&w, "done");
    wd__retire_member(&w);
    wd_jw_end_object(&w);
    rc = wd__send(&w, NULL, 0);
    if (rc == WD_OK) wd__state = WD__DONE;
    return rc;
}

/* Run the handler for the event in wd__event and send its final frame.
 * 0, or 1 when the final frame could not be written (the reason on stderr). */
static int wd__handle_event(wd_fetch_handler on_fetch, wd_tail_handler on_tail) {
    int rc;
    if (strcmp(wd__event.type, "fetch") == 0) {
        const wd_json *r = wd_json_get(wd__event.meta, "request");
        wd_request req;
        wd_response res;
        wd__state = WD__FETCH;
        if (!on_fetch) wd_throw("NoHandler", "this Worker has no fetch handler");
        memset(&req, 0, sizeof req);
        memset(&res, 0, sizeof res);
        req.method = wd_json_string(wd_json_get(r, "method"), "GET");
        req.url = wd_json_string(wd_json_get(r, "url"), "");
        if (wd__headers_from_json(&req.headers, wd_json_get(r, "headers")) != WD_OK)
            wd_throw("OutOfMemory", "out of memory reading the request headers");
        req.body = wd__event.body;
        req.body_len = wd__event.body_len;
        res.status = 200;
        on_fetch(&req, &res);
        rc = WD_OK;
        if (wd__state == WD__FETCH) {
            rc = wd_respond(&res);
            if (rc == WD_ETOOBIG) wd_throw("ResponseTooLarge", "%s", wd__err);
            if (rc == WD_EINVAL) wd_throw("InvalidResponse", "%s", wd__err);
        }
        wd_headers_free(&req.headers);
        wd_response_free(&res);
        if (rc != WD_OK) {
            fprintf(stderr, "error: wasmdeck: could not send the response: %s\n", wd__err);
            return 1;
        }
        return 0;
    }
    if (strcmp(wd__event.type, "tail") == 0) {
        wd_tail_batch batch;
        wd_json *items;
        wd__state = WD__TAIL;
        if (!on_tail) wd_throw("NoHandler", "this Worker has no tail handler");
        memset(&batch, 0, sizeof batch);
        items = wd_json_parse((const char *)wd__event.body, wd__event.body_len);
        batch.count = (size_t)wd_json_int(wd_json_get(wd__event.meta, "count"),
                                          items && items->type == WD_JSON_ARRAY ? (long long)items->count : 0);
        batch.items = items;
        batch.body = wd__event.body;
        batch.body_len = wd__event.body_len;
        batch.parse_error = items ? NULL : wd__err;
        on_tail(&batch);
        rc = wd__state == WD__TAIL ? wd__send_done() : WD_OK;
        wd_json_free(items);
        if (rc != WD_OK) {
            fprintf(stderr, "error: wasmdeck: could not send done: %s\n", wd__err);
            return 1;
        }
        return 0;
    }
    wd__state = WD__FETCH;
    wd_throw("UnknownEvent", "this Worker does not handle \"%s\" events", wd__event.type);
}

/* Is this the answer to a call that was in flight when an earlier event ended?  (The engine
 * may have written it before it read that event's final frame; section 9.3.) */
static int wd__stale_answer(const char *type) {
    size_t n = strlen(type);
    return (n > 7 && strcmp(type + n - 7, "_result") == 0) || (n > 6 && strcmp(type + n - 6, "_error") == 0);
}

/* Version 2: answer init with ready, then serve event after event until stdin ends. */
static int wd__serve_instance(wd_fetch_handler on_fetch, wd_tail_handler on_tail) {
    static const char ready[] = "{\"type\":\"ready\"}";
    wd_frame_free(&wd__event);
    if (wd_frame_write(ready, sizeof ready - 1, NULL, 0) != WD_OK) {
        fprintf(stderr, "error: wasmdeck: could not send ready: %s\n", wd__err);
        return 1;
    }
    return wd_serve_events(on_fetch, on_tail);
}

int wd_serve_events(wd_fetch_handler on_fetch, wd_tail_handler on_tail) {
    int rc;
    if (wd__state != WD__IDLE) {
        fprintf(stderr, "error: wasmdeck: wd_serve_events may run only once\n");
        return 1;
    }
    wd__warm = 1;
    atexit(wd__flush_held); /* held log lines still leave when a handler calls exit() */
    for (;;) {
        do {
            rc = wd_frame_read(&wd__event);
            if (rc != WD_OK && wd__input_ended) return 0; /* the engine is done with this instance */
            if (rc != WD_OK) {
                fprintf(stderr, "error: wasmdeck: could not read the event frame: %s\n", wd__err);
                return 1;
            }
            if (wd__stale_answer(wd__event.type)) wd_frame_free(&wd__event);
        } while (!wd__event.meta);
        rc = wd__handle_event(on_fetch, on_tail);
        wd_frame_free(&wd__event);
        if (rc != 0 || wd__retire) return rc;
        wd__state = WD__IDLE;
    }
}

int wd_serve(wd_fetch_handler on_fetch, wd_tail_handler on_tail) {
    int rc;
    if (wd__state != WD__IDLE || wd__warm) {
        fprintf(stderr, "error: wasmdeck: wd_serve may run only once\n");
        return 1;
    }
    rc = wd_frame_read(&wd__event);
    if (rc != WD_OK) {
        fprintf(stderr, "error: wasmdeck: could not read the event frame: %s\n", wd__err);
        return 1;
    }
    if (strcmp(wd__event.type, "init") == 0) return wd__serve_instance(on_fetch, on_tail);
    return wd__handle_event(on_fetch, on_tail);
}

#endif /* WASMDECK_IMPLEMENTATION_DONE */
#endif /* WASMDECK_IMPLEMENTATION */
