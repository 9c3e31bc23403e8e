/*
 * cpu/quant_klanes512.h - Q5_K, Q6_K and IQ4_XS on rows as stored at the
 * AVX-512 level, in ggml's 8 int32 lanes per row (their exact numerics), or
 * with F = 1 in their fast ones (the lanes summed in int32, one fma per
 * super-block: the packed tiles' bits, cpu/quant_packed_avx512.c).
 * Included once, by quant_avx512.c, after the helpers it uses.
 */
/* ==== Q5_K, Q6_K, IQ4_XS: one row, ggml's lanes ============================ */

/* Each of these computes one weight row against C activation rows (C <= 4,
 * the columns X + c * xrb, outputs y[c * ldy]): the weights are unpacked
 * once per super-block for all C, and each output is the one-row kernel's
 * arithmetic exactly (its own int32 lanes, fma chain and final sum). */
#define QCOLS_MAX 4

/* The fast numerics' accumulation, y = fmaf(isum_b, d_b, y) over the
 * super-blocks b in order, with each isum_b the sum of its 8 int32 lanes
 * (exact): the lanes of 8 super-blocks summed together (a vphaddd tree), 8
 * fmaf after. */
typedef struct f8q {
    __m256i s[8];
    float d[8];
    int n;
} f8q;
QAI void f8_flush(f8q *q, float *y) {
    if (!q->n) return;
    for (int j = q->n; j < 8; j++) q->s[j] = _mm256_setzero_si256();
    const __m256i g0 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(q->s[0], q->s[1]), _mm256_hadd_epi32(q->s[2], q->s[3]));
    const __m256i g1 =
        _mm256_hadd_epi32(_mm256_hadd_epi32(q->s[4], q->s[5]), _mm256_hadd_epi32(q->s[6], q->s[7]));
    const __m256i t = _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20),
                                       _mm256_permute2x128_si256(g0, g1, 0x31));
    _Alignas(32) float f[8];
    _mm256_store_ps(f, _mm256_cvtepi32_ps(t));
    for (int j = 0; j < q->n; j++) *y = fmaf(f[j], q->d[j], *y);
    q->n = 0;
}
QAI void f8_push(f8q *q, __m256i s, float d, float *y) {
    q->s[q->n] = s;
    q->d[q->n] = d;
    if (++q->n == 8) f8_flush(q, y);
}

/* dot_q5_K's arithmetic: the 16 int32 of the zmm products, low half plus
 * high half, are ggml's 8 lanes (lane l: elements 4l..4l+3 of every group).
 * The fifth bits: qh and qh >> 2 side by side give groups 0, 2 (bit 0) and
 * 1, 3 (bit 1); shifted by 4 more, groups 4..7. */
QAI void dot_q5_K_512f(const int C, const int F, int64_t nblk, const moe_block_q5_K *w,
                       const char *X, size_t xrb, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(15), b4 = _mm512_set1_epi8(16);
    const __m512i ctl[4] = {q_ctl16(0, 2), q_ctl16(1, 3), q_ctl16(4, 6), q_ctl16(5, 7)};
    __m256 acc[QCOLS_MAX];
    float summs[QCOLS_MAX], fm[QCOLS_MAX]; /* F: summs the scales' sum, fm the minimums' */
    f8q fq[QCOLS_MAX];
    for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps(), summs[c] = fm[c] = 0.0f, fq[c].n = 0;
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 3);
        uint64_t sc, mn;
        k4_scales8(w[b].scales, &sc, &mn);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)w[b].qh);
        const __m512i h0 =
            _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        const __m512i h1 = _mm512_srli_epi16(h0, 4);
        const __m512i q0 = _mm512_loadu_si512(w[b].qs), q1 = _mm512_loadu_si512(w[b].qs + 64);
        const __m512i l[4] = {_mm512_or_si512(_mm512_and_si512(q0, m4),
                                              _mm512_and_si512(_mm512_slli_epi16(h0, 4), b4)),
                              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q0, 4), m4),
                                              _mm512_and_si512(_mm512_slli_epi16(h0, 3), b4)),
                              _mm512_or_si512(_mm512_and_si512(q1, m4),
                                              _mm512_and_si512(_mm512_slli_epi16(h1, 4), b4)),
                              _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q1, 4), m4),
                                              _mm512_and_si512(_mm512_slli_epi16(h1, 3), b4))};
        const __m512i s = _mm512_set1_epi64((long long)sc);
        __m512i sv[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) sv[j] = _mm512_shuffle_epi8(s, ctl[j]);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const moe_block_q8_K *xb = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            const float d = xb->d * q_f16(w[b].d), dmin = -xb->d * q_f16(w[b].dmin);
            const __m128i bs2 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)xb->bsums),
                                               _mm_loadu_si128((const __m128i *)xb->bsums + 1));
            if (F)
                fm[c] = fmaf((float)k4_mins(mn, bs2), -dmin, fm[c]);
            else
                summs[c] += dmin * (float)k4_mins(mn, bs2);
            __m512i xa[4];
            k4_acts(xb->qs, xa);
            __m512i a = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
                a = _mm512_dpwssd_epi32(a, _mm512_maddubs_epi16(l[j], xa[j]), sv[j]);
            const __m256i sumi =
                _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
            if (F)
                f8_push(&fq[c], sumi, d, &summs[c]);
            else
                acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[c]);
        }
    }
    for (int c = 0; c < C && F; c++) f8_flush(&fq[c], &summs[c]);
    for (int c = 0; c < C; c++) y[c * ldy] = F ? summs[c] - fm[c] : q_hsum8(acc[c]) + summs[c];
}

/* dot_q6_K's arithmetic: 64 weights a zmm (ql's 64 bytes: elements 0..63 of
 * a half from the low nibbles, 64..127 from the high), each 128-bit lane
 * one group of 16 with its scale (vpermw); ggml's 8 lanes as in Q5_K; the
 * 32 * scales * bsums term as ggml's. */
QAI void dot_q6_K_512f(const int C, const int F, int64_t nblk, const moe_block_q6_K *w,
                       const char *X, size_t xrb, float *y, int64_t ldy) {
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(0x30);
    const __m512i idx[4] = {q_idx4(0), q_idx4(4), q_idx4(8), q_idx4(12)};
    __m256 acc[QCOLS_MAX];
    float fs[QCOLS_MAX];
    f8q fq[QCOLS_MAX];
    for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps(), fs[c] = 0.0f, fq[c].n = 0;
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 4);
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[b].scales));
        const __m512i s = _mm512_castsi256_si512(sc16);
        __m512i a[QCOLS_MAX];
        for (int c = 0; c < C; c++) a[c] = _mm512_setzero_si512();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            const __m512i l = _mm512_loadu_si512(w[b].ql + 64 * h);
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(w[b].qh + 32 * h));
            const __m512i h2 =
                _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
            const __m512i qa = _mm512_or_si512(_mm512_and_si512(l, m4),
                                               _mm512_and_si512(_mm512_slli_epi16(h2, 4), m3));
            const __m512i qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                               _mm512_and_si512(h2, m3));
            const __m512i sa = _mm512_permutexvar_epi16(idx[2 * h], s);
            const __m512i sb = _mm512_permutexvar_epi16(idx[2 * h + 1], s);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                const int8_t *xq =
                    ((const moe_block_q8_K *)(X + (size_t)c * xrb) + b)->qs + 128 * h;
                a[c] =
                    _mm512_dpwssd_epi32(a[c], _mm512_maddubs_epi16(qa, _mm512_loadu_si512(xq)), sa);
                a[c] = _mm512_dpwssd_epi32(
                    a[c], _mm512_maddubs_epi16(qb, _mm512_loadu_si512(xq + 64)), sb);
            }
        }
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const moe_block_q8_K *xb = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            const float d = xb->d * q_f16(w[b].d);
            const __m256i bs = _mm256_loadu_si256((const __m256i *)xb->bsums);
            const __m256i sub = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
            const __m256i sumi = _mm256_sub_epi32(
                _mm256_add_epi32(_mm512_castsi512_si256(a[c]), _mm512_extracti64x4_epi64(a[c], 1)),
                sub);
            if (F)
                f8_push(&fq[c], sumi, d, &fs[c]);
            else
                acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[c]);
        }
    }
    for (int c = 0; c < C && F; c++) f8_flush(&fq[c], &fs[c]);
    for (int c = 0; c < C; c++) y[c * ldy] = F ? fs[c] : q_hsum8(acc[c]);
}

/* The 8 group scales - 32 of an IQ4_XS block as int16, from its first 8
 * bytes h (d, scales_h, scales_l): one vpshufb puts scale g's scales_l byte
 * and scales_h byte in int16 g, two variable shifts bring its 4 low and 2
 * high bits down, one vpternlog joins them. */
QAI __m128i iqx_scales(__m128i h) {
    const __m128i w =
        _mm_shuffle_epi8(h, _mm_setr_epi8(4, 2, 4, 2, 5, 2, 5, 2, 6, 3, 6, 3, 7, 3, 7, 3));
    const __m128i lo = _mm_srlv_epi16(w, _mm_setr_epi16(0, 4, 0, 4, 0, 4, 0, 4));
    const __m128i hi = _mm_and_si128(_mm_srlv_epi16(w, _mm_setr_epi16(4, 6, 8, 10, 4, 6, 8, 10)),
                                     _mm_set1_epi16(0x30));
    /* (lo & 15) | hi */
    const __m128i sc = _mm_ternarylogic_epi32(lo, hi, _mm_set1_epi16(15), 0xEC);
    return _mm_sub_epi16(sc, _mm_set1_epi16(32));
}

/* Half h of IQ4_XS block b times C activation rows, into alo / ahi: qs as
 * one zmm, 128-bit lane g one group (its low nibbles elements 0..15, high
 * 16..31, which land in ggml's lanes 0..3 and 4..7); each lane times its
 * group's scale - 32 (sg). vpmaddubsw needs one unsigned side. P = 0
 * (activations as Q8_K has them): the levels' magnitudes by table, their
 * signs (index < 8) moved onto the activations. P = 1 (iqx_order's
 * activations: magnitudes, sign masks): the levels by table, negated by a
 * masked second lookup where the activation is negative. P = 2 (the same
 * activations, AVX512_VBMI): the levels by vpermb, which needs no masked
 * nibbles, negated by a masked subtraction (port 0 or 5, where the second
 * lookup is port 5 only): 4 fewer instructions a block, L2 16.5-17.7 ->
 * 17.8-18.9 GB/s. The products, hence every sum, are the same integers
 * every way. */
QAI void iqx_half(const int C, const int P, const uint8_t *qs, __m512i sg, const char *X,
                  size_t xrb, int64_t b, int h, __m512i *alo, __m512i *ahi) {
    const __m512i m4 = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
    const __m512i tab = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)moe_iq4nl_values));
    const __m512i zero = _mm512_setzero_si512();
    const __m512i q = _mm512_loadu_si512(qs + 64 * h);
    const __m512i lo = _mm512_and_si512(q, m4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    if (P) {
        /* P 2: vpermb reads 6 index bits and tab is the 16 levels 4 times
         * over, so the nibbles need no masking (lo, hi unused) */
        const __m512i ntab = _mm512_sub_epi8(zero, tab);
        const __m512i tl = P == 2 ? q_permb(q, tab) : _mm512_shuffle_epi8(tab, lo);
        const __m512i th =
            P == 2 ? q_permb(_mm512_srli_epi16(q, 4), tab) : _mm512_shuffle_epi8(tab, hi);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const moe_block_q8_K *xb = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            uint64_t neg[2];
            memcpy(neg, xb->bsums + 8 * h, sizeof neg);
            const __m512i sl = P == 2 ? _mm512_mask_sub_epi8(tl, neg[0], zero, tl)
                                      : _mm512_mask_shuffle_epi8(tl, neg[0], ntab, lo);
            const __m512i sh = P == 2 ? _mm512_mask_sub_epi8(th, neg[1], zero, th)
                                      : _mm512_mask_shuffle_epi8(th, neg[1], ntab, hi);
            alo[c] = _mm512_dpwssd_epi32(
                alo[c], _mm512_maddubs_epi16(_mm512_loadu_si512(xb->qs + 128 * h), sl), sg);
            ahi[c] = _mm512_dpwssd_epi32(
                ahi[c], _mm512_maddubs_epi16(_mm512_loadu_si512(xb->qs + 128 * h + 64), sh), sg);
        }
        return;
    }
    const __m512i tabs = _mm512_abs_epi8(tab);
    const __m512i tl = _mm512_shuffle_epi8(tabs, lo), th = _mm512_shuffle_epi8(tabs, hi);
    const __mmask64 nl = _mm512_testn_epi8_mask(lo, eight);
    const __mmask64 nh = _mm512_testn_epi8_mask(hi, eight);
#pragma GCC unroll 4
    for (int c = 0; c < C; c++) {
        const int8_t *xq = ((const moe_block_q8_K *)(X + (size_t)c * xrb) + b)->qs + 128 * h;
        const __m512i x0 = _mm512_loadu_si512(xq), x1 = _mm512_loadu_si512(xq + 64);
        const __m512i xl = _mm512_shuffle_i32x4(x0, x1, 0x88);
        const __m512i xh = _mm512_shuffle_i32x4(x0, x1, 0xdd);
        alo[c] = _mm512_dpwssd_epi32(
            alo[c], _mm512_maddubs_epi16(tl, _mm512_mask_sub_epi8(xl, nl, zero, xl)), sg);
        ahi[c] = _mm512_dpwssd_epi32(
            ahi[c], _mm512_maddubs_epi16(th, _mm512_mask_sub_epi8(xh, nh, zero, xh)), sg);
    }
}

/* [a's 128-bit lanes 0+1, 2+3, b's 0+1, 2+3] (exact). */
QAI __m512i iqx_pairsum(__m512i a, __m512i b) {
    return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xdd));
}

/* dot_iq4_xs's arithmetic on C activation rows: per block ggml's 8 int32
 * lanes (lanes 0..3 from alo summed over its 128-bit lanes, 4..7 from
 * ahi), then one fma into 8 float lanes. F = 1: the fast numerics
 * (moe_iq4xsp_pack's) instead: the 8 lanes summed in int32 (exact), one
 * scalar fma per block. */
QAI void dot_iq4_xs_512f(const int C, const int P, const int F, int64_t nblk,
                         const moe_block_iq4_xs *w, const char *X, size_t xrb, float *y,
                         int64_t ldy) {
    const __m512i idx[2] = {q_idx4(0), q_idx4(4)};
    __m256 acc[QCOLS_MAX];
    float fs[QCOLS_MAX];
    f8q fq[QCOLS_MAX];
    for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps(), fs[c] = 0.0f, fq[c].n = 0;
    for (int64_t b = 0; b < nblk; b++) {
        q_prefetch(&w[b], 3);
        const __m128i hd = _mm_loadu_si128((const __m128i *)&w[b]);
        const __m512i s = _mm512_castsi128_si512(iqx_scales(hd));
        __m512i alo[QCOLS_MAX], ahi[QCOLS_MAX];
        for (int c = 0; c < C; c++) alo[c] = ahi[c] = _mm512_setzero_si512();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++)
            iqx_half(C, P, w[b].qs, _mm512_permutexvar_epi16(idx[h], s), X, xrb, b, h, alo, ahi);
        const float dw = _mm_cvtss_f32(_mm_cvtph_ps(hd));
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const moe_block_q8_K *xb = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            const __m512i u = iqx_pairsum(alo[c], ahi[c]);
            const __m512i t = _mm512_add_epi32(u, _mm512_shuffle_i32x4(u, u, 0xb1));
            const __m256i sumi = _mm512_castsi512_si256(_mm512_shuffle_i32x4(t, t, 0x08));
            if (F)
                f8_push(&fq[c], sumi, dw * xb->d, &fs[c]);
            else
                acc[c] =
                    _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), _mm256_cvtepi32_ps(sumi), acc[c]);
        }
    }
    for (int c = 0; c < C && F; c++) f8_flush(&fq[c], &fs[c]);
    for (int c = 0; c < C; c++) y[c * ldy] = F ? fs[c] : q_hsum8(acc[c]);
}

/* Q8_K activation rows as dot_iq4_xs_512f reads them with P = 1: in each
 * 128 of a block, the low nibbles' elements (16 of each group of 32) first,
 * then the high nibbles', as magnitudes in qs; in bsums, for each 64 of
 * them, a 64-bit mask of the negative ones; d as is. */
static void iqx_order(const char *X, size_t xrb, int64_t nb, int64_t nblk, char *out) {
    for (int64_t c = 0; c < nb; c++)
        for (int64_t b = 0; b < nblk; b++) {
            const moe_block_q8_K *s = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
            moe_block_q8_K *o = (moe_block_q8_K *)(out + (size_t)c * xrb) + b;
            o->d = s->d;
            uint64_t neg[4];
            for (int h = 0; h < 2; h++) {
                const __m512i x0 = _mm512_loadu_si512(s->qs + 128 * h);
                const __m512i x1 = _mm512_loadu_si512(s->qs + 128 * h + 64);
                const __m512i xl = _mm512_shuffle_i32x4(x0, x1, 0x88);
                const __m512i xh = _mm512_shuffle_i32x4(x0, x1, 0xdd);
                _mm512_storeu_si512(o->qs + 128 * h, _mm512_abs_epi8(xl));
                _mm512_storeu_si512(o->qs + 128 * h + 64, _mm512_abs_epi8(xh));
                neg[2 * h] = _mm512_movepi8_mask(xl);
                neg[2 * h + 1] = _mm512_movepi8_mask(xh);
            }
            memcpy(o->bsums, neg, sizeof neg);
        }
}

/* One of the three above on weight row w, C columns. */
#define QK_COLS_CASE(fn, C)                                                                        \
    case C:                                                                                        \
        fn(C, nblk, w, x, xrb, y, ldy);                                                            \
        break;
#define QK_COLS(fn)                                                                                \
    static void fn##_cols(int C, int64_t nblk, const void *w, const char *x, size_t xrb, float *y, \
                          int64_t ldy) {                                                           \
        switch (C) {                                                                               \
            QK_COLS_CASE(fn, 1)                                                                    \
            QK_COLS_CASE(fn, 2)                                                                    \
            QK_COLS_CASE(fn, 3)                                                                    \
        default:                                                                                   \
            fn(4, nblk, w, x, xrb, y, ldy);                                                        \
            break;                                                                                 \
        }                                                                                          \
    }

/* The exact kernels, for QK_COLS and k_rows */
QAI void dot_q5_K_512(const int C, int64_t nblk, const moe_block_q5_K *w, const char *X, size_t xrb,
                      float *y, int64_t ldy) {
    dot_q5_K_512f(C, 0, nblk, w, X, xrb, y, ldy);
}
QAI void dot_q6_K_512(const int C, int64_t nblk, const moe_block_q6_K *w, const char *X, size_t xrb,
                      float *y, int64_t ldy) {
    dot_q6_K_512f(C, 0, nblk, w, X, xrb, y, ldy);
}
QK_COLS(dot_q5_K_512)
QK_COLS(dot_q6_K_512)
/* dot_iq4_xs_512f on activations in Q8_K's own order */
QAI void dot_iq4_xs_512_q(const int C, int64_t nblk, const moe_block_iq4_xs *w, const char *X,
                          size_t xrb, float *y, int64_t ldy) {
    dot_iq4_xs_512f(C, 0, 0, nblk, w, X, xrb, y, ldy);
}
QK_COLS(dot_iq4_xs_512_q)

/* The fast numerics (moe_cpu_kernels.gemm_fast) on rows as stored: the rows
 * a packed matrix leaves after its tiles, and matrices not packed
 * (MOE_REPACK=0, experts not yet brought in). */
QAI void dot_q5_K_512_fast(const int C, int64_t nblk, const moe_block_q5_K *w, const char *X,
                           size_t xrb, float *y, int64_t ldy) {
    dot_q5_K_512f(C, 1, nblk, w, X, xrb, y, ldy);
}
QAI void dot_q6_K_512_fast(const int C, int64_t nblk, const moe_block_q6_K *w, const char *X,
                           size_t xrb, float *y, int64_t ldy) {
    dot_q6_K_512f(C, 1, nblk, w, X, xrb, y, ldy);
}
QAI void dot_iq4_xs_512_fast(const int C, int64_t nblk, const moe_block_iq4_xs *w, const char *X,
                             size_t xrb, float *y, int64_t ldy) {
    dot_iq4_xs_512f(C, 0, 1, nblk, w, X, xrb, y, ldy);
}
QK_COLS(dot_q5_K_512_fast)
QK_COLS(dot_q6_K_512_fast)
QK_COLS(dot_iq4_xs_512_fast)
