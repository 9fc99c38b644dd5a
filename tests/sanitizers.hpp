// Which sanitizer a test binary is built with, under g++ (which defines __SANITIZE_ADDRESS__ and
// __SANITIZE_THREAD__) and clang (which has only __has_feature for them): PASYN_TEST_ASAN and
// PASYN_TEST_TSAN are 1 or 0, for `#if`.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define PASYN_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PASYN_TEST_ASAN 1
#endif
#endif
#ifndef PASYN_TEST_ASAN
#define PASYN_TEST_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define PASYN_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PASYN_TEST_TSAN 1
#endif
#endif
#ifndef PASYN_TEST_TSAN
#define PASYN_TEST_TSAN 0
#endif
