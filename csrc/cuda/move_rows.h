// Host entry points of the CUDA arena movement (csrc/cuda/move_rows.cu).
#pragma once
#include <cstdint>

// Moves n_moves rows between two device buffers of src_len / dst_len elements (elem_size 2, 4 or 8 bytes),
// asynchronously on `stream` (a cudaStream_t as an integer). Throws std::runtime_error on any CUDA error and
// std::invalid_argument on bad sizes. src/dst/copy/total are device pointers to int64 arrays of n_moves.
void cuda_move_rows(uint64_t src_buf, uint64_t dst_buf, int elem_size, int64_t src_len, int64_t dst_len,
                    uint64_t src, uint64_t dst, uint64_t copy, uint64_t total, int64_t n_moves, uint64_t stream);

// True when the CUDA runtime sees at least one device (false without a driver: the module still imports).
bool cuda_device_available();
