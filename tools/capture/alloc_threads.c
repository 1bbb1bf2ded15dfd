// A multithreaded allocator user: threads (stacks from glibc, MAP_STACK) allocate in their own
// malloc arenas (reserved with MAP_NORESERVE, committed with mprotect), grow buffers with
// realloc (mremap), free some, and are joined; then the process prints its /proc/self/maps
// (tools/capture/capture.sh runs it under strace).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { THREADS = 4, ROUNDS = 64 };

static void *work(void *arg) {
    size_t seed = (size_t)arg;
    void *keep[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        size_t size = 1024 + (seed * 7919 + i * 104729) % (96 * 1024);
        keep[i] = malloc(size);
        memset(keep[i], i, size);
    }
    // A buffer grown past the mmap threshold: realloc moves it with mremap.
    char *grown = malloc(256 * 1024);
    for (size_t size = 512 * 1024; size <= 8 * 1024 * 1024; size *= 2) {
        grown = realloc(grown, size);
        grown[size - 1] = 1;
    }
    for (int i = 0; i < ROUNDS; i += 2)
        free(keep[i]);
    return grown;
}

int main(void) {
    pthread_t threads[THREADS];
    for (size_t t = 0; t < THREADS; t++)
        pthread_create(&threads[t], NULL, work, (void *)t);
    for (size_t t = 0; t < THREADS; t++) {
        void *grown;
        pthread_join(threads[t], &grown);
        if (t % 2)
            free(grown);
    }
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (fgets(line, sizeof line, maps))
        fputs(line, stdout);
    return 0;
}
