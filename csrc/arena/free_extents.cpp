#include "arena/free_extents.h"

#include <iterator>
#include <stdexcept>
#include <string>

namespace pyscall {

void FreeExtents::clear() {
  by_offset_.clear();
  by_length_.clear();
  total_ = 0;
}

void FreeExtents::insert(int64_t off, int64_t len) {
  by_offset_.emplace(off, len);
  by_length_.emplace(len, off);
  total_ += len;
}

void FreeExtents::erase(std::map<int64_t, int64_t>::iterator it) {
  by_length_.erase({it->second, it->first});
  total_ -= it->second;
  by_offset_.erase(it);
}

void FreeExtents::release(int64_t off, int64_t len) {
  if (len <= 0) return;
  auto next = by_offset_.lower_bound(off);
  // A double free would corrupt the accounting silently: refuse it loudly.
  if (next != by_offset_.end() && next->first < off + len)
    throw std::logic_error("arena: freeing [" + std::to_string(off) + ", " +
                           std::to_string(off + len) + ") overlaps a free extent");
  if (next != by_offset_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second > off)
      throw std::logic_error("arena: freeing [" + std::to_string(off) + ", " +
                             std::to_string(off + len) + ") overlaps a free extent");
    if (prev->first + prev->second == off) {
      off = prev->first;
      len += prev->second;
      erase(prev);
    }
  }
  if (next != by_offset_.end() && next->first == off + len) {
    len += next->second;
    erase(next);
  }
  insert(off, len);
}

int64_t FreeExtents::take_best_fit(int64_t len) {
  auto fit = by_length_.lower_bound({len, INT64_MIN});
  if (fit == by_length_.end()) return -1;
  const int64_t off = fit->second, have = fit->first;
  erase(by_offset_.find(off));
  if (have > len) insert(off + len, have - len);
  return off;
}

bool FreeExtents::take_head(int64_t off, int64_t len) {
  auto it = by_offset_.find(off);
  if (it == by_offset_.end() || it->second < len) return false;
  const int64_t have = it->second;
  erase(it);
  if (have > len) insert(off + len, have - len);
  return true;
}

void FreeExtents::carve(int64_t off, int64_t len) {
  if (len <= 0) return;
  auto it = by_offset_.upper_bound(off);
  if (it == by_offset_.begin() || std::prev(it)->first + std::prev(it)->second < off + len)
    throw std::logic_error("arena: [" + std::to_string(off) + ", " + std::to_string(off + len) +
                           ") is not free");
  --it;
  const int64_t start = it->first, end = it->first + it->second;
  erase(it);
  if (start < off) insert(start, off - start);
  if (off + len < end) insert(off + len, end - off - len);
}

int64_t FreeExtents::length_ending_at(int64_t end) const {
  auto it = by_offset_.lower_bound(end);
  if (it == by_offset_.begin()) return 0;
  --it;
  return it->first + it->second == end ? it->second : 0;
}

}  // namespace pyscall
