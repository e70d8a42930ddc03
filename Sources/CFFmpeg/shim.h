#ifndef ESTUARY_CFFMPEG_SHIM_H
#define ESTUARY_CFFMPEG_SHIM_H
#include <libavformat/avformat.h>
#include <libavformat/avio.h>
#include <libavcodec/avcodec.h>
#include <libavutil/avutil.h>
#include <libavutil/mem.h>
#include <libavutil/error.h>
#include <libavutil/opt.h>
#include <libavutil/mathematics.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

/* AVERROR(e) and AV_NOPTS_VALUE are macros Swift cannot import. */
static inline int estuary_averror(int errnum) { return AVERROR(errnum); }
static inline int64_t estuary_av_nopts_value(void) { return AV_NOPTS_VALUE; }
/* AVERROR_INVALIDDATA is built with FFERRTAG, a function-like macro. */
static inline int estuary_averror_invaliddata(void) { return AVERROR_INVALIDDATA; }

/* Where a muxer's bytes go: a write function of our own signature (libavformat's made its
 * buffer const in version 61, so Swift cannot name one prototype for every version), called
 * through a context-independent trampoline. The Swift side appends straight into the
 * segment's ByteBuffer, so muxed bytes are copied once, out of the AVIOContext's buffer. */
typedef int (*estuary_write_fn)(void *opaque, const uint8_t *buf, int buf_size);

typedef struct estuary_sink {
    estuary_write_fn write;
    void *opaque;
} estuary_sink;

#if LIBAVFORMAT_VERSION_MAJOR >= 61
static int estuary_sink_write(void *opaque, const uint8_t *buf, int buf_size)
#else
static int estuary_sink_write(void *opaque, uint8_t *buf, int buf_size)
#endif
{
    const estuary_sink *sink = (const estuary_sink *)opaque;
    if (buf_size <= 0) return 0;
    return sink->write(sink->opaque, buf, buf_size);
}

/* An AVIOContext that hands everything written to `sink`; NULL on allocation failure. */
static inline AVIOContext *estuary_avio_open_sink(estuary_sink *sink) {
    const int size = 65536;
    unsigned char *buffer = (unsigned char *)av_malloc(size);
    if (!buffer) return NULL;
    AVIOContext *pb = avio_alloc_context(buffer, size, 1, sink, NULL, estuary_sink_write, NULL);
    if (!pb) av_free(buffer);
    return pb;
}

/* Frees the context and its (possibly reallocated) internal buffer. */
static inline void estuary_avio_close(AVIOContext **pb) {
    if (!pb || !*pb) return;
    av_freep(&(*pb)->buffer);
    avio_context_free(pb);
}
#endif
