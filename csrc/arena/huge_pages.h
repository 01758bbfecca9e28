// Transparent huge pages for the arena's CPU buffers.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyscall {

// Asks Linux to back the 2 MiB-aligned part of [addr, addr + bytes) with transparent huge pages.
// Lookups and updates hit random rows of a table much larger than the TLB's reach with 4 KiB
// pages, so each row costs a page walk; with 2 MiB pages most of them go (numpy advises its large
// arrays the same way). Call before the memory is first written. Returns whether the advice was taken (false
// off Linux, when no whole huge page fits, or when the kernel refuses).
bool advise_huge_pages(std::uintptr_t addr, std::size_t bytes);

}  // namespace pyscall
