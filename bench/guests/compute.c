/* compute: a CPU-bound WCGI guest with a fixed amount of work, for bench/metering.py.
 *   ?kernel=NAME&n=N   run one kernel (burn, hash, sieve, fib, qsort, matmul, strings, calls) N times
 *   (no kernel)        run every kernel once
 * It answers the kernels' checksums, so the work cannot be optimised away. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *query(const char *key, char *out, size_t size) {
    const char *qs = getenv("QUERY_STRING");
    size_t klen = strlen(key);
    for (const char *p = qs; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            size_t vlen = len - klen - 1 < size - 1 ? len - klen - 1 : size - 1;
            memcpy(out, p + klen + 1, vlen);
            out[vlen] = 0;
            return out;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static volatile unsigned long sink; /* as fixtures/wcgi/burn.c: keeps the loop from being optimised away */

static uint64_t burn(void) { /* burn.c's loop, 20 M iterations instead of "until N ms have passed" */
    for (uint32_t i = 0; i < 20000000; i++) sink++;
    return sink;
}

static uint64_t hash(void) { /* integer arithmetic in one tight loop */
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < 20000000; i++) h = (h ^ i) * 1099511628211ull;
    return h;
}

static uint64_t sieve(void) { /* byte stores over a 2 MB array */
    enum { N = 2000000 };
    static uint8_t composite[N];
    memset(composite, 0, sizeof composite);
    uint64_t count = 0;
    for (uint32_t i = 2; i < N; i++) {
        if (composite[i]) continue;
        count += i;
        for (uint32_t j = i * 2; j < N; j += i) composite[j] = 1;
    }
    return count;
}

static uint32_t fib(uint32_t n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static int compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint64_t sort(void) { /* libc qsort through a comparator */
    enum { N = 300000 };
    static uint32_t values[N];
    uint32_t s = 12345;
    for (uint32_t i = 0; i < N; i++) values[i] = s = s * 1103515245u + 12345u;
    qsort(values, N, sizeof values[0], compare);
    return values[N / 2] ^ values[7];
}

static uint64_t matmul(void) { /* floating point and loads */
    enum { N = 120 };
    static double a[N][N], b[N][N], c[N][N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) a[i][j] = i + j * 0.5, b[i][j] = i * 0.25 - j;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double sum = 0;
            for (int k = 0; k < N; k++) sum += a[i][k] * b[k][j];
            c[i][j] = sum;
        }
    return (uint64_t)(c[N - 1][N - 2] * 1000);
}

static uint64_t strings(void) { /* memcpy, memset, strlen, strcmp */
    static char buf[1 << 16], other[1 << 16];
    uint64_t total = 0;
    for (int round = 0; round < 400; round++) {
        memset(buf, 'a' + round % 26, sizeof buf - 1);
        buf[sizeof buf - 1] = 0;
        memcpy(other, buf, sizeof buf);
        other[round] = 'z';
        total += strlen(other) + (uint64_t)(strcmp(buf, other) < 0);
    }
    return total;
}

__attribute__((noinline)) static uint32_t step(uint32_t x) { return x * 2654435761u + 1; }

static uint64_t calls(void) { /* a loop around a small function that is not inlined */
    uint32_t x = 1;
    for (uint32_t i = 0; i < 5000000; i++) x = step(x);
    return x;
}

struct kernel { const char *name; uint64_t (*run)(void); };
static uint64_t fib_kernel(void) { return fib(27); }
static const struct kernel KERNELS[] = {
    {"burn", burn}, {"hash", hash}, {"sieve", sieve}, {"fib", fib_kernel}, {"qsort", sort},
    {"matmul", matmul}, {"strings", strings}, {"calls", calls},
};

int main(void) {
    char name[32], count[16];
    const char *wanted = query("kernel", name, sizeof name);
    long n = query("n", count, sizeof count) ? atol(count) : 1;
    uint64_t checksum = 0;
    for (size_t k = 0; k < sizeof KERNELS / sizeof KERNELS[0]; k++) {
        if (wanted && strcmp(wanted, KERNELS[k].name) != 0) continue;
        for (long i = 0; i < n; i++) checksum ^= KERNELS[k].run() + (uint64_t)i;
    }
    printf("Content-Type: text/plain\r\n\r\n%llu\n", (unsigned long long)checksum);
    return 0;
}
