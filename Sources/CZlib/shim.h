#ifndef RAILGATE_CZLIB_SHIM_H
#define RAILGATE_CZLIB_SHIM_H
#include <zlib.h>

// deflateInit2 is a macro over deflateInit2_ (it passes ZLIB_VERSION and the stream size),
// which Swift does not import. This wrapper makes it callable.
static inline int railgate_deflate_init_gzip(z_streamp stream, int level) {
    // windowBits 15 + 16 selects the gzip wrapper (magic 1f 8b) rather than zlib's.
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
#endif
