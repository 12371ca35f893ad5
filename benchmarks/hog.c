/* A container workload for benchmarks and tests: holds HOG_MIB MiB of patterned memory, counts in
 * /tmp/count, and on request (/tmp/verify appears) reads every byte back and writes the verdict to
 * /tmp/verified. Built static so it runs in a busybox rootfs. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void put(const char *path, const char *text) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    if (write(fd, text, strlen(text)) < 0) {}
    close(fd);
    rename(tmp, path);
}

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 16;
    size_t size = (size_t)mib << 20;
    unsigned char *mem = malloc(size);
    if (!mem) return 1;
    for (size_t i = 0; i < size; i++) mem[i] = (unsigned char)(i * 31 + 7);
    int in = open("/dev/null", O_RDONLY), out = open("/tmp/log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(in, 0); dup2(out, 1); dup2(out, 2);
    char text[64];
    for (unsigned long n = 1;; n++) {
        snprintf(text, sizeof text, "%lu\n", n);
        put("/tmp/count", text);
        if (access("/tmp/verify", F_OK) == 0) {
            size_t bad = 0;
            for (size_t i = 0; i < size; i++) bad += mem[i] != (unsigned char)(i * 31 + 7);
            snprintf(text, sizeof text, "%s %zu\n", bad ? "bad" : "ok", size);
            unlink("/tmp/verify");
            put("/tmp/verified", text);
        }
        usleep(50000);
    }
}
