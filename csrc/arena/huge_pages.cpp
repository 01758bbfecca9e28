#include "arena/huge_pages.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pyscall {

bool advise_huge_pages(std::uintptr_t addr, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHuge = std::uintptr_t(1) << 21;
  const std::uintptr_t start = (addr + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t end = (addr + bytes) & ~(kHuge - 1);
  if (end <= start) return false;
  return madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE) == 0;
#else
  (void)addr;
  (void)bytes;
  return false;
#endif
}

}  // namespace pyscall
