// Typed errors raised by the native core. Python maps each kind to a class in kvlab.memory.errors,
// so callers can catch OutOfPhysicalMemory or LimitExceeded and turn them into scheduling misses.
#pragma once
#include <stdexcept>
#include <string>

namespace kvlab {

enum class ErrorKind : int {
    OutOfPhysicalMemory = 0,
    LimitExceeded = 1,
    Backend = 2,
    InvalidPages = 3,
    Closed = 4,
    InvalidArgument = 5,
};

struct Error : std::runtime_error {
    ErrorKind kind;
    Error(ErrorKind k, const std::string &msg) : std::runtime_error(msg), kind(k) {}
};

[[noreturn]] inline void fail(ErrorKind k, const std::string &msg) { throw Error(k, msg); }

}  // namespace kvlab
