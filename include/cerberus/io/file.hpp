// Files: whole-file reads, exact positioned reads, and atomic writes. POSIX (open, pread, fsync,
// rename): atomic replacement needs rename and fsync, which <fstream> cannot express.
//
// AtomicFile writes `path + ".tmp.<pid>"` in the target's directory, fsyncs it, renames it over
// the target and fsyncs the directory. A reader therefore sees the old file or the complete new
// one, never a mix, even if the process dies or the machine loses power mid-write; on any error
// the temporary file is removed and the previous file is left untouched.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cerberus/core/error.hpp"

namespace cerberus::io {

namespace detail {
inline std::string errno_text(int err) { return std::generic_category().message(err); }  // thread-safe, unlike strerror

inline std::string parent_directory(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Reads exactly `bytes` at `offset`; returns how many bytes were read before end of file.
// Throws FileError on an I/O error.
inline std::size_t pread_full(int fd, void* out, std::size_t bytes, std::uint64_t offset, const std::string& op, const std::string& path) {
  std::size_t done = 0;
  while (done < bytes) {
    const ::ssize_t n = ::pread(fd, static_cast<char*>(out) + done, bytes - done, static_cast<::off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw FileError("[" + op + "] " + path + ": read failed at byte " + std::to_string(offset + done) + ": " + errno_text(errno));
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}
}  // namespace detail

// An open read-only file descriptor, closed on destruction.
class ReadOnlyFile {
 public:
  ReadOnlyFile(std::string path, std::string op) : path_(std::move(path)), op_(std::move(op)) {
    do fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) throw FileError("[" + op_ + "] cannot open " + path_ + " for reading: " + detail::errno_text(errno));
    struct ::stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      throw FileError("[" + op_ + "] cannot stat " + path_ + ": " + detail::errno_text(err));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  ReadOnlyFile(ReadOnlyFile&& o) noexcept : path_(std::move(o.path_)), op_(std::move(o.op_)), fd_(std::exchange(o.fd_, -1)), size_(o.size_) {}
  ReadOnlyFile& operator=(ReadOnlyFile&& o) noexcept {
    std::swap(path_, o.path_), std::swap(op_, o.op_), std::swap(fd_, o.fd_), std::swap(size_, o.size_);
    return *this;
  }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  ~ReadOnlyFile() {
    if (fd_ >= 0) ::close(fd_);
  }

  const std::string& path() const { return path_; }
  // Size when opened; reads check against what is really there.
  std::uint64_t size() const { return size_; }
  // Reads exactly `bytes` at `offset` or throws naming `what` ("tensor 'w'") and the range.
  void read_exact(void* out, std::size_t bytes, std::uint64_t offset, const std::string& what) const {
    const std::size_t got = detail::pread_full(fd_, out, bytes, offset, op_, path_);
    if (got != bytes)
      throw FileError("[" + op_ + "] " + path_ + ": file ended at byte " + std::to_string(offset + got) + " while reading " + what +
                      " (bytes " + std::to_string(offset) + ".." + std::to_string(offset + bytes) + "); was it changed after it was opened?");
  }

 private:
  std::string path_, op_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// The whole file as a string.
inline std::string read_file(const std::string& path, const std::string& op = "read_file") {
  ReadOnlyFile f(path, op);
  std::string out(static_cast<std::size_t>(f.size()), '\0');
  f.read_exact(out.data(), out.size(), 0, "the file");
  return out;
}

// See the top of this file. Usage: AtomicFile f(path, "save"); f.write(...); f.commit();
// Destroying it without commit() (an exception on the way) removes the temporary file.
class AtomicFile {
 public:
  AtomicFile(std::string path, std::string op)
      : path_(std::move(path)), temp_(path_ + ".tmp." + std::to_string(::getpid())), op_(std::move(op)) {
    do fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) throw FileError("[" + op_ + "] cannot write " + path_ + ": creating " + temp_ + " failed: " + detail::errno_text(errno));
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { abandon(); }

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

  // Small pieces are gathered into one buffer; large ones go straight to the file.
  void write(const void* data, std::size_t bytes) {
    if (buffer_.size() + bytes > buffer_limit) flush();
    if (bytes >= buffer_limit) write_fd(data, bytes);
    else buffer_.append(static_cast<const char*>(data), bytes);
  }

  // Makes the new content durable and visible under `path`, replacing any previous file.
  void commit() {
    flush();
    if (::fsync(fd_) != 0) fail("syncing " + temp_, errno);
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail("closing " + temp_, errno);
    if (::rename(temp_.c_str(), path_.c_str()) != 0) fail("renaming " + temp_ + " over it", errno);
    committed_ = true;
    // The rename lives in the directory: without this sync a power loss could forget it.
    const std::string dir = detail::parent_directory(path_);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) throw FileError("[" + op_ + "] wrote " + path_ + " but cannot open its directory to sync it: " + detail::errno_text(errno));
    const int rc = ::fsync(dfd), err = errno;
    ::close(dfd);
    if (rc != 0 && err != EINVAL)  // EINVAL: the file system cannot sync directories; nothing to do
      throw FileError("[" + op_ + "] wrote " + path_ + " but syncing its directory failed: " + detail::errno_text(err));
  }

 private:
  static constexpr std::size_t buffer_limit = std::size_t{1} << 20;

  void flush() {
    if (!buffer_.empty()) write_fd(buffer_.data(), buffer_.size());
    buffer_.clear();
  }
  void write_fd(const void* data, std::size_t bytes) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ::ssize_t n = ::write(fd_, p, bytes);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("writing " + temp_, errno);
      p += n;
      bytes -= static_cast<std::size_t>(n);
    }
  }
  void abandon() noexcept {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    if (!committed_) ::unlink(temp_.c_str());
  }
  [[noreturn]] void fail(const std::string& step, int err) {
    abandon();
    throw FileError("[" + op_ + "] cannot write " + path_ + ": " + step + " failed: " + detail::errno_text(err) +
                    "; the previous file, if any, is untouched");
  }

  std::string path_, temp_, op_;
  std::string buffer_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace cerberus::io
