// A table's readers-writer lock (pyscall.arena.LayoutLock): layout changes hold it exclusively,
// lookups, updates and reads of the layout shared. Writers are preferred, so a stream of lookups
// cannot starve a layout change. Not recursive: a thread holding it must not take it again.
// Uncontended, taking and dropping it costs two calls from Python and no GIL release; a thread that
// must wait releases the GIL first, so that the holder (which may need it) can go on.
#pragma once
#include <pthread.h>

#include <stdexcept>

namespace pyscall {

class LayoutLock {
 public:
  LayoutLock() {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
#ifdef __GLIBC__
    // glibc's default prefers readers; a waiting writer then waits for a moment without any reader.
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    const int err = pthread_rwlock_init(&lock_, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (err != 0) throw std::runtime_error("LayoutLock: pthread_rwlock_init failed");
  }
  ~LayoutLock() { pthread_rwlock_destroy(&lock_); }
  LayoutLock(const LayoutLock&) = delete;
  LayoutLock& operator=(const LayoutLock&) = delete;

  bool try_shared() { return pthread_rwlock_tryrdlock(&lock_) == 0; }
  void wait_shared() { pthread_rwlock_rdlock(&lock_); }
  bool try_exclusive() { return pthread_rwlock_trywrlock(&lock_) == 0; }
  void wait_exclusive() { pthread_rwlock_wrlock(&lock_); }
  void release() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

}  // namespace pyscall
