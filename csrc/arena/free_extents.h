// Free space of the arena as coalesced extents: one tree by offset (to merge
// neighbours on release) and one by (length, offset) (best fit in O(log n)).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <utility>

namespace pyscall {

class FreeExtents {
 public:
  // A libstdc++ tree node holds 3 links + colour (32 B) and a 16-byte value;
  // malloc serves it from a 64-byte chunk, which is what it really costs.
  static constexpr size_t kNodeBytes = 64;

  void clear();
  // Frees [off, off + len) and merges it with free neighbours.
  void release(int64_t off, int64_t len);
  // Best fit: the smallest extent of length >= len (lowest offset on ties).
  // Returns its start, or -1 when nothing fits.
  int64_t take_best_fit(int64_t len);
  // Takes [off, off + len) when a free extent starts exactly at off and is
  // long enough (in-place growth of the row ending at off).
  bool take_head(int64_t off, int64_t len);
  // Takes [off, off + len), which must lie inside one free extent (undoes a release).
  void carve(int64_t off, int64_t len);
  // Length of the free extent ending at `end` (0 if none).
  int64_t length_ending_at(int64_t end) const;

  size_t count() const { return by_offset_.size(); }
  int64_t total() const { return total_; }
  int64_t largest() const { return by_length_.empty() ? 0 : by_length_.rbegin()->first; }
  size_t metadata_bytes() const { return 2 * count() * kNodeBytes; }
  const std::map<int64_t, int64_t>& by_offset() const { return by_offset_; }
  const std::set<std::pair<int64_t, int64_t>>& by_length() const { return by_length_; }

 private:
  void insert(int64_t off, int64_t len);
  void erase(std::map<int64_t, int64_t>::iterator it);

  std::map<int64_t, int64_t> by_offset_;             // offset -> length
  std::set<std::pair<int64_t, int64_t>> by_length_;  // (length, offset)
  int64_t total_ = 0;
};

}  // namespace pyscall
