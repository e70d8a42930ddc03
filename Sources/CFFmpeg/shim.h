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

/* A growable byte buffer that a muxer writes into through a custom AVIOContext.
 * Kept in C so the write callback matches libavformat's prototype exactly
 * (its buffer became const in libavformat 61). */
typedef struct estuary_membuf {
    uint8_t *data;
    size_t size;
    size_t capacity;
} estuary_membuf;

#if LIBAVFORMAT_VERSION_MAJOR >= 61
static int estuary_membuf_write(void *opaque, const uint8_t *buf, int buf_size)
#else
static int estuary_membuf_write(void *opaque, uint8_t *buf, int buf_size)
#endif
{
    estuary_membuf *mb = (estuary_membuf *)opaque;
    if (buf_size <= 0) return 0;
    if ((size_t)buf_size > SIZE_MAX / 4 - mb->size) return AVERROR(ENOMEM);
    if (mb->size + (size_t)buf_size > mb->capacity) {
        size_t capacity = mb->capacity ? mb->capacity : 65536;
        while (capacity < mb->size + (size_t)buf_size) capacity *= 2;
        uint8_t *grown = (uint8_t *)av_realloc(mb->data, capacity);
        if (!grown) return AVERROR(ENOMEM);
        mb->data = grown;
        mb->capacity = capacity;
    }
    memcpy(mb->data + mb->size, buf, (size_t)buf_size);
    mb->size += (size_t)buf_size;
    return buf_size;
}

/* An AVIOContext that appends everything written to `mb`; NULL on allocation failure. */
static inline AVIOContext *estuary_avio_open_membuf(estuary_membuf *mb) {
    const int size = 65536;
    unsigned char *buffer = (unsigned char *)av_malloc(size);
    if (!buffer) return NULL;
    AVIOContext *pb = avio_alloc_context(buffer, size, 1, mb, NULL, estuary_membuf_write, NULL);
    if (!pb) av_free(buffer);
    return pb;
}

/* Frees the context and its (possibly reallocated) internal buffer. */
static inline void estuary_avio_close_membuf(AVIOContext **pb) {
    if (!pb || !*pb) return;
    av_freep(&(*pb)->buffer);
    avio_context_free(pb);
}

static inline void estuary_membuf_free(estuary_membuf *mb) {
    av_freep(&mb->data);
    mb->size = 0;
    mb->capacity = 0;
}
#endif
