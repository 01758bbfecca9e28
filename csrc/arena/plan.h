// A layout plan: what the data buffers must do after the arena changed its
// metadata. The arena never touches data; apply_plan_cpu (or the CUDA path)
// replays the plan on every flat buffer that shares the weight's layout.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace pyscall {

// Row moves: copy `copy` elements from src to dst, then zero-fill
// dst[copy:total].
//  - unordered: every destination is disjoint from every other destination
//    and from every source read in the step, so moves may run in any order,
//    in parallel, in place.
//  - ordered: a full re-layout. Run sequentially in array order with memmove
//    semantics it is correct in place (no move reads a value an earlier move
//    overwrote); it lists every live row with its full new extent (rows with
//    src == dst included), so it is also correct out of place (read the old
//    buffer, write a fresh one). Destinations are pairwise disjoint.
// An allocator whose resize() leaves new elements uninitialised: a
// re-layout sizes its step once and fills it, and zeroing 32 MB first would
// cost a whole extra pass.
template <typename T>
struct NoInit : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = NoInit<U>;
  };
  NoInit() = default;
  template <typename U>
  NoInit(const NoInit<U>&) {}
  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
using Ints = std::vector<int64_t, NoInit<int64_t>>;

struct Step {
  Ints src, dst, copy, total;
  bool ordered = false;
  // Ends of what the moves read and write (elements), kept by push() so that
  // a replay checks its buffers without a pass over the arrays.
  int64_t read_end = 0, write_end = 0;

  size_t size() const { return src.size(); }
  size_t capacity() const { return src.capacity(); }
  // Empties the step but keeps its storage for the next plan.
  void clear() {
    src.clear();
    dst.clear();
    copy.clear();
    total.clear();
    ordered = false;
    read_end = write_end = 0;
  }
  void reserve(size_t n) {
    src.reserve(n);
    dst.reserve(n);
    copy.reserve(n);
    total.reserve(n);
  }
  // Sizes the arrays for set(); their new entries are undefined until set.
  void resize(size_t n) {
    src.resize(n);
    dst.resize(n);
    copy.resize(n);
    total.resize(n);
  }
  void set(size_t k, int64_t s, int64_t d, int64_t c, int64_t t) {
    src[k] = s;
    dst[k] = d;
    copy[k] = c;
    total[k] = t;
    if (c > 0) read_end = std::max(read_end, s + c);
    write_end = std::max(write_end, d + t);
  }
  void push(int64_t s, int64_t d, int64_t c, int64_t t) {
    src.push_back(s);
    dst.push_back(d);
    copy.push_back(c);
    total.push_back(t);
    if (c > 0) read_end = std::max(read_end, s + c);
    write_end = std::max(write_end, d + t);
  }
};

// How the buffers follow a plan (the arena decides; pyscall/replay.py executes it on the CPU or a GPU):
//  kInPlace: the capacity stays; the steps run on the buffers as they are.
//  kGrow:    new buffers of capacity_after hold the old values, zeros from capacity_before, then the steps.
//  kTrim:    the steps run in place, then new buffers of capacity_after take the first values.
//  kFresh:   one ordered step (a re-layout) at a new capacity: rows move straight into new buffers, which
//            are zero from used_after (a re-layout packs the rows from 0).
enum class Replay : int32_t { kInPlace = 0, kGrow = 1, kTrim = 2, kFresh = 3 };

struct Plan {
  int64_t capacity_before = 0, capacity_after = 0;  // elements of each flat buffer
  int64_t used_after = 0;                           // elements the rows hold afterwards
  // Per-row state (float32 [num_rows]): rows_before..rows_after are new and start at 0; reset_rows
  // (released rows) go back to 0.
  int64_t rows_before = 0, rows_after = 0;
  Ints reset_rows;
  Replay replay = Replay::kInPlace;
  // The operation needs buffers allocated before its metadata may change: the arena holds the new
  // metadata aside until Arena::commit(), so a failed allocation leaves it as it was.
  bool staged = false;
  std::vector<Step> steps;
};

// One flat buffer to replay a plan on.
struct Buffer {
  char* data;
  int64_t elem_size;  // bytes
  int64_t numel;
};

// Replays every step of `plan` on every buffer with up to `num_threads`
// OpenMP threads. Checks every extent against every buffer's numel first and
// throws std::out_of_range without touching data when one does not fit.
void apply_plan_cpu(const Plan& plan, const std::vector<Buffer>& buffers, int num_threads);

// Replays a plan made of one ordered step (a re-layout) out of place: reads
// from[i], writes to[i] (a fresh buffer of capacity_after elements; nothing
// outside the rows is written). Used when capacity changes anyway, so the
// data moves once instead of being copied into a resized buffer first.
void apply_relayout_cpu(const Plan& plan, const std::vector<Buffer>& from,
                        const std::vector<Buffer>& to, int num_threads);

}  // namespace pyscall
