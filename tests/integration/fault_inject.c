/* Fault injection for the integration tests: an LD_PRELOAD library that makes one system call of
 * the real pasyn-writerd fail, the way a failing disk or a full file system would, without any
 * test hook in the daemon.
 *
 * The fault is armed by a trigger file, named by $PASYN_FAULT_FILE. While that file exists, the
 * calls below read it; it holds one line:
 *
 *     OP ERRNO MATCH [SKIP [TIMES]]
 *
 *   OP     fsync (fsync and fdatasync), pwrite (pwrite64), pread (pread64), or malloc
 *   ERRNO  EIO, ENOSPC or ENOMEM: what the failing call sets errno to
 *   MATCH  for the file calls, a substring of the file's path (/proc/self/fd/N): "-wal", the
 *          database's WAL; "etilqs", SQLite's temporary files (statement journals); ending
 *          in '$', the end of the path ("db.sqlite$": the database file, not its WAL). For
 *          malloc, a size in bytes: only larger requests fail.
 *   SKIP   matching calls to let through first (default 0)
 *   TIMES  how many matching calls fail after those (default 1)
 *
 * The last failing call renames the trigger file to "<trigger>.fired", so the test can tell the
 * fault happened, and every later call runs normally.
 *
 * Thread-safety: calls from any thread; firing is serialized by a mutex. The malloc hook calls
 * only async-signal-safe functions and allocates nothing (it must not recurse).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

extern void* __libc_malloc(size_t size);

static pthread_mutex_t fire_mu = PTHREAD_MUTEX_INITIALIZER;
static long matched = 0; /* matching calls seen since the trigger appeared (under fire_mu) */
static long failed = 0;  /* of which failed */

struct trigger {
  char op[16];
  char err[16];
  char match[256];
  long skip;
  long times;
};

/* Reads the trigger file; 0 if there is none (the fast path: one access()). */
static int read_trigger(struct trigger* t) {
  const char* path = getenv("PASYN_FAULT_FILE");
  if (!path || access(path, F_OK) != 0) return 0;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[512];
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  t->skip = 0;
  t->times = 1;
  if (sscanf(buf, "%15s %15s %255s %ld %ld", t->op, t->err, t->match, &t->skip, &t->times) < 3) {
    return 0;
  }
  return 1;
}

static int errno_named(const char* name) {
  if (strcmp(name, "ENOSPC") == 0) return ENOSPC;
  if (strcmp(name, "ENOMEM") == 0) return ENOMEM;
  return EIO;
}

/* True if the call should fail now, with *err set; consumes the trigger when it does. */
static int should_fail(const char* op, int fd, size_t size, int* err) {
  struct trigger t;
  if (!read_trigger(&t) || strcmp(t.op, op) != 0) return 0;
  if (strcmp(op, "malloc") == 0) {
    if (size <= (size_t)strtoull(t.match, NULL, 10)) return 0;
  } else {
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = '\0';
    const size_t len = strlen(t.match);
    if (len > 0 && t.match[len - 1] == '$') { /* anchored at the end of the path */
      const size_t n_match = len - 1, n_target = strlen(target);
      if (n_target < n_match || strncmp(target + n_target - n_match, t.match, n_match) != 0)
        return 0;
    } else if (!strstr(target, t.match)) {
      return 0;
    }
  }
  int fire = 0;
  pthread_mutex_lock(&fire_mu);
  const char* path = getenv("PASYN_FAULT_FILE");
  if (access(path, F_OK) == 0) { /* not fired by another thread meanwhile */
    if (matched++ >= t.skip) {
      fire = 1;
      if (++failed >= t.times) {
        char fired[4096];
        snprintf(fired, sizeof fired, "%s.fired", path);
        rename(path, fired);
        matched = failed = 0;
      }
    }
  }
  pthread_mutex_unlock(&fire_mu);
  if (fire) *err = errno_named(t.err);
  return fire;
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

int fsync(int fd) {
  int err;
  if (should_fail("fsync", fd, 0, &err)) {
    errno = err;
    return -1;
  }
  return REAL("fsync", int (*)(int))(fd);
}

int fdatasync(int fd) {
  int err;
  if (should_fail("fsync", fd, 0, &err)) {
    errno = err;
    return -1;
  }
  return REAL("fdatasync", int (*)(int))(fd);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off_t offset) {
  int err;
  if (should_fail("pwrite", fd, n, &err)) {
    errno = err;
    return -1;
  }
  return REAL("pwrite64", ssize_t(*)(int, const void*, size_t, off_t))(fd, buf, n, offset);
}

ssize_t pread64(int fd, void* buf, size_t n, off_t offset) {
  int err;
  if (should_fail("pread", fd, n, &err)) {
    errno = err;
    return -1;
  }
  return REAL("pread64", ssize_t(*)(int, void*, size_t, off_t))(fd, buf, n, offset);
}

/* Only large requests are looked at, so the common small allocation costs one comparison. */
#define MALLOC_MIN_WATCHED (64 * 1024)

void* malloc(size_t size) {
  int err;
  if (size > MALLOC_MIN_WATCHED && should_fail("malloc", -1, size, &err)) {
    errno = ENOMEM;
    return NULL;
  }
  return __libc_malloc(size);
}
