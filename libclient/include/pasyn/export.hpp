// Symbol visibility for libpasyn-client.so: everything is hidden unless marked PASYN_EXPORT.
#pragma once

#if defined(__GNUC__) || defined(__clang__)
#define PASYN_EXPORT __attribute__((visibility("default")))
#else
#define PASYN_EXPORT
#endif
