// Choosing the CUDA stream cerberus work runs on, per thread:
//   CudaStream s;                  a new stream (non-blocking: it does not wait for the legacy
//                                  default stream), synchronised and destroyed with the object
//   { CudaStreamGuard g(s); ... }  every kernel, copy and cuBLAS call of this thread inside the
//                                  scope goes to s; the previous stream comes back at scope end
//   s.synchronize()                the host waits for everything queued on s
//   s.wait_for(other)              work queued on s from now on waits for what is queued on other
// Without a guard, work goes to the legacy default stream, as before. Each stream has its own
// pool in the caching allocator (memory.cuh), so memory freed by one stream's work is reused
// only by that stream. A tensor made under one stream and used under another must stay alive
// until that other stream has finished with it (synchronize or wait_for before dropping it):
// otherwise its block may go back to its own stream's pool while the other stream still reads it.
// Two threads with a stream each run their models concurrently (serving, say); cuBLAS keeps one
// handle per (device, stream) (blas.cuh).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"

namespace cerberus {

class CudaStream {
 public:
  CudaStream() { cuda_backend::check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "CudaStream", "cudaStreamCreateWithFlags"); }
  ~CudaStream() {
    if (!stream_) return;
    // Queued work may still use memory of this stream's pool; the pool outlives the stream and
    // a later stream with the same handle takes it over only after this point.
    (void)cudaStreamSynchronize(stream_);
    (void)cudaStreamDestroy(stream_);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  CudaStream(CudaStream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  CudaStream& operator=(CudaStream&& other) noexcept {
    if (this != &other) {
      CudaStream dying(std::move(*this));
      stream_ = std::exchange(other.stream_, nullptr);
    }
    return *this;
  }

  cudaStream_t get() const { return stream_; }

  void synchronize() const { cuda_backend::check(cudaStreamSynchronize(stream_), "CudaStream::synchronize", "cudaStreamSynchronize"); }

  // Work queued on this stream after the call waits for all work queued on `other` before it.
  void wait_for(cudaStream_t other) const {
    cudaEvent_t done = nullptr;
    cuda_backend::check(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "CudaStream::wait_for", "cudaEventCreateWithFlags");
    const cudaError_t recorded = cudaEventRecord(done, other);
    const cudaError_t waited = recorded == cudaSuccess ? cudaStreamWaitEvent(stream_, done, 0) : recorded;
    (void)cudaEventDestroy(done);  // released once the wait is satisfied; the wait itself stays queued
    cuda_backend::check(waited, "CudaStream::wait_for", recorded == cudaSuccess ? "cudaStreamWaitEvent" : "cudaEventRecord");
  }
  void wait_for(const CudaStream& other) const { wait_for(other.get()); }

 private:
  cudaStream_t stream_ = nullptr;
};

// Sends this thread's cerberus work to `stream` for the guard's lifetime.
class CudaStreamGuard {
 public:
  explicit CudaStreamGuard(cudaStream_t stream) : previous_(cuda_backend::current_stream()) { cuda_backend::current_stream() = stream; }
  explicit CudaStreamGuard(const CudaStream& stream) : CudaStreamGuard(stream.get()) {}
  ~CudaStreamGuard() { cuda_backend::current_stream() = previous_; }
  CudaStreamGuard(const CudaStreamGuard&) = delete;
  CudaStreamGuard& operator=(const CudaStreamGuard&) = delete;

 private:
  cudaStream_t previous_;
};

// The stream this thread's cerberus work goes to now.
inline cudaStream_t current_cuda_stream() { return cuda_backend::stream(); }

}  // namespace cerberus
