/*
 * cpu/quant_fast256.h - faster 256-bit kernels for Q4_1, Q5_0, Q5_1, Q2_K
 * and Q3_K, included by quant_avx2.c and quant_avx512.c (after
 * quant_simd.h, whose build at the same level is their reference: every
 * output the same bits).
 *
 * quant_simd.h's and quant_k23simd.h's arithmetic: the same 8 int32 lanes
 * per block (lane l: elements 4l..4l+3 of every 32), the same float steps.
 * Faster by unpacking on whole registers (the 4-bit blocks' nibbles by one
 * broadcast load and a variable shift, their fp16 scale pairs converted
 * together; the K types' scales for all 16 groups at once, spread to int16
 * lanes by vpshufb, not scalar unpacks and broadcasts per 32 elements),
 * each weight byte loaded once, software prefetch along the row, and one
 * weight row unpacked once for up to F256_COLS activation rows. Also the
 * K types' activations (Q8_K) 8 floats a step, the scalar code's bytes.
 */

#define F256_COLS 4

/* ==== Q4_1, Q5_0, Q5_1 ===================================================== */

/* 16 bytes of nibbles -> 32 bytes: the low nibbles, then the high ones (as
 * q_nibbles). */
QAI __m256i f256_nibbles(const uint8_t *p) {
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    return _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
                            _mm256_set1_epi8(15));
}

/* Two adjacent fp16 (d and m of Q4_1 / Q5_1, d and s of Q8_1) as floats in
 * lanes 0 and 1. */
QAI __m128 f256_f16x2(const void *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
}

/* dot_q4_1 (q5 = 0) or dot_q5_1's arithmetic on C activation rows (X + c
 * * xrb, outputs y[c * ldy]): d_w * d_x and m_w * s_x by one multiply. */
QAI void dot_q41_fast(const int q5, const int C, int64_t nblk, const char *w, const char *X,
                      size_t xrb, float *y, int64_t ldy) {
    const size_t bs = q5 ? sizeof(moe_block_q5_1) : sizeof(moe_block_q4_1);
    __m256 acc[F256_COLS];
    float summs[F256_COLS];
    for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps(), summs[c] = 0.0f;
    for (int64_t b = 0; b < nblk; b++) {
        const char *wb = w + (size_t)b * bs;
        if ((b & 1) == 0) q_prefetch(wb, 1);
        const __m128 wf = f256_f16x2(wb);
        __m256i q;
        if (q5) {
            const moe_block_q5_1 *b5 = (const moe_block_q5_1 *)wb;
            q = _mm256_or_si256(f256_nibbles(b5->qs),
                                _mm256_and_si256(q_bits(b5->qh), _mm256_set1_epi8(16)));
        } else {
            q = f256_nibbles(((const moe_block_q4_1 *)wb)->qs);
        }
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const moe_block_q8_1 *xb = (const moe_block_q8_1 *)(X + (size_t)c * xrb) + b;
            const __m128 pr = _mm_mul_ps(wf, f256_f16x2(xb)); /* d_w d_x, m_w s_x */
            summs[c] += _mm_cvtss_f32(_mm_movehdup_ps(pr));
            const __m256i p = q_dot_u8(q, _mm256_loadu_si256((const __m256i *)xb->qs));
            acc[c] = _mm256_fmadd_ps(_mm256_broadcastss_ps(pr), _mm256_cvtepi32_ps(p), acc[c]);
        }
    }
    for (int c = 0; c < C; c++) y[c * ldy] = q_hsum8(acc[c]) + summs[c];
}

/* dot_q5_0's arithmetic on C activation rows. */
QAI void dot_q5_0_fast(const int C, int64_t nblk, const moe_block_q5_0 *w, const char *X,
                       size_t xrb, float *y, int64_t ldy) {
    __m256 acc[F256_COLS];
    for (int c = 0; c < C; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        if ((b & 1) == 0) q_prefetch(&w[b], 1);
        const float dw = q_f16(w[b].d);
        const __m256i q =
            _mm256_or_si256(f256_nibbles(w[b].qs),
                            _mm256_andnot_si256(q_bits(w[b].qh), _mm256_set1_epi8((char)0xf0)));
        const __m256i qa = _mm256_sign_epi8(q, q);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const moe_block_q8_0 *xb = (const moe_block_q8_0 *)(X + (size_t)c * xrb) + b;
            const __m256 d = _mm256_set1_ps(dw * q_f16(xb->d));
            const __m256i p =
                q_dot_u8(qa, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb->qs), q));
            acc[c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[c]);
        }
    }
    for (int c = 0; c < C; c++) y[c * ldy] = q_hsum8(acc[c]);
}

/* ==== Q2_K, Q3_K =========================================================== */

/* vpshufb control: int16 lanes of the low 128 bits = byte a of the lane
 * zero-extended, of the high 128 bits byte b. */
QAI __m256i f256_ctl8(int a, int b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)(0x8000 | a))),
                                   _mm_set1_epi16((short)(0x8000 | b)), 1);
}

/* vpshufb control: int16 lanes of the low 128 bits = int16 element a of the
 * lane, of the high 128 bits element b. */
QAI __m256i f256_ctl16(int a, int b) {
    return _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_set1_epi16((short)((2 * a + 1) << 8 | 2 * a))),
        _mm_set1_epi16((short)((2 * b + 1) << 8 | 2 * b)), 1);
}

/* Bit p of each byte of v moved to bit 2 (the others not cleared); p <= 7. */
QAI __m256i f256_bit_to2(__m256i v, int p) {
    return p < 2 ? _mm256_slli_epi16(v, 2 - p) : p > 2 ? _mm256_srli_epi16(v, p - 2) : v;
}

/* The float step of a Q2_K / Q3_K super-block for R (1, 2) weight rows of
 * fp16 scales d0, d1 and C activation rows: acc += (d_x * d_w) * sumi, as
 * ggml's per block. */
QAI void k23_block_acc(const int R, const int C, uint16_t d0, uint16_t d1,
                       const moe_block_q8_K *const *xb, __m256i sumi[2][F256_COLS],
                       __m256 acc[2][F256_COLS]) {
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
        const float dw = q_f16(r ? d1 : d0);
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) {
            const float d = xb[c]->d * dw;
            acc[r][c] =
                _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[r][c]), acc[r][c]);
        }
    }
}

/* dot_q2_K's arithmetic on R weight rows (W + r * wrb; R = 2 with C = 1
 * only) and C activation rows (X + c * xrb), outputs y[c * ldy + r].
 * Chunk (h, t) = elements 128h + 32t..+31: levels bits 2t of
 * qs[32h..32h+31], scales of groups 8h + 2t (low 128 bits) and 8h + 2t + 1
 * (high) by one vpshufb from the 16 scale bytes in both lanes. */
QAI void dot_q2_K_fast(const int R, const int C, int64_t nblk, const char *W, size_t wrb,
                       const char *X, size_t xrb, float *y, int64_t ldy) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m15 = _mm_set1_epi8(15);
    __m256 acc[2][F256_COLS];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const moe_block_q8_K *xb[F256_COLS];
        const moe_block_q2_K *wb[2];
        __m256i sumi[2][F256_COLS], sc[2];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) xb[c] = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            wb[r] = (const moe_block_q2_K *)(W + (size_t)r * wrb) + b;
            q_prefetch(wb[r], 2);
            const __m128i ms = _mm_loadu_si128((const __m128i *)wb[r]->scales);
            const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(ms, 4), m15));
            sc[r] = _mm256_broadcastsi128_si256(_mm_and_si128(ms, m15));
            const float mw = q_f16(wb[r]->dmin);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) {
                const float dmin = -xb[c]->d * mw;
                const __m256i prod =
                    _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)xb[c]->bsums));
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc[r][c]);
                sumi[r][c] = _mm256_setzero_si256();
            }
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q[2];
#pragma GCC unroll 2
            for (int r = 0; r < R; r++)
                q[r] = _mm256_loadu_si256((const __m256i *)(wb[r]->qs + 32 * h));
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                __m256i lv[2], s16[2];
#pragma GCC unroll 2
                for (int r = 0; r < R; r++) {
                    lv[r] = _mm256_and_si256(_mm256_srli_epi16(q[r], 2 * t), m3);
                    s16[r] =
                        _mm256_shuffle_epi8(sc[r], f256_ctl8(8 * h + 2 * t, 8 * h + 2 * t + 1));
                }
#pragma GCC unroll 4
                for (int c = 0; c < C; c++) {
                    const __m256i xq =
                        _mm256_loadu_si256((const __m256i *)(xb[c]->qs + 128 * h + 32 * t));
#pragma GCC unroll 2
                    for (int r = 0; r < R; r++)
                        sumi[r][c] = _mm256_add_epi32(
                            sumi[r][c], _mm256_madd_epi16(s16[r], _mm256_maddubs_epi16(lv[r], xq)));
                }
            }
        }
        k23_block_acc(R, C, wb[0]->d, wb[R - 1]->d, xb, sumi, acc);
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) y[c * ldy + r] = q_hsum8(acc[r][c]);
}

/* dot_q3_K's arithmetic on R weight rows (W + r * wrb; R = 2 with C = 1
 * only) and C activation rows, outputs y[c * ldy + r]. The 16 scales
 * unpacked on whole words (as ggml's AVX2 code), sign-extended to int16
 * and spread by vpshufb; the levels taken as q + 4 * hbit (0..7) times x
 * minus 4 x, in int16 before the scale's vpmaddwd: the reference's exact
 * int16 pairs. Two rows share the 4 x term (decode). */
QAI void dot_q3_K_fast(const int R, const int C, int64_t nblk, const char *W, size_t wrb,
                       const char *X, size_t xrb, float *y, int64_t ldy) {
    const __m256i m3 = _mm256_set1_epi8(3), b2 = _mm256_set1_epi8(4);
    __m256 acc[2][F256_COLS];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const moe_block_q8_K *xb[F256_COLS];
        const moe_block_q3_K *wb[2];
        __m256i sumi[2][F256_COLS], sc16[2], hm[2];
#pragma GCC unroll 4
        for (int c = 0; c < C; c++) xb[c] = (const moe_block_q8_K *)(X + (size_t)c * xrb) + b;
#pragma GCC unroll 2
        for (int r = 0; r < R; r++) {
            wb[r] = (const moe_block_q3_K *)(W + (size_t)r * wrb) + b;
            q_prefetch(wb[r], 2);
#pragma GCC unroll 4
            for (int c = 0; c < C; c++) sumi[r][c] = _mm256_setzero_si256();
            uint32_t u0, u1, u2;
            memcpy(&u0, wb[r]->scales, 4);
            memcpy(&u1, wb[r]->scales + 4, 4);
            memcpy(&u2, wb[r]->scales + 8, 4);
            const uint32_t k2 = 0x0f0f0f0fu, k1 = 0x03030303u;
            const __m128i s8 =
                _mm_sub_epi8(_mm_setr_epi32((int)((u0 & k2) | (u2 & k1) << 4),
                                            (int)((u1 & k2) | ((u2 >> 2) & k1) << 4),
                                            (int)(((u0 >> 4) & k2) | ((u2 >> 4) & k1) << 4),
                                            (int)(((u1 >> 4) & k2) | ((u2 >> 6) & k1) << 4)),
                             _mm_set1_epi8(32));
            sc16[r] = _mm256_cvtepi8_epi16(s8);
            hm[r] = _mm256_loadu_si256((const __m256i *)wb[r]->hmask);
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q[2], sh[2];
#pragma GCC unroll 2
            for (int r = 0; r < R; r++) {
                q[r] = _mm256_loadu_si256((const __m256i *)(wb[r]->qs + 32 * h));
                sh[r] = _mm256_permute2x128_si256(sc16[r], sc16[r], h ? 0x11 : 0x00);
            }
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                __m256i lv[2], s16[2];
#pragma GCC unroll 2
                for (int r = 0; r < R; r++) {
                    lv[r] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q[r], 2 * t), m3),
                                            _mm256_and_si256(f256_bit_to2(hm[r], 4 * h + t), b2));
                    s16[r] = _mm256_shuffle_epi8(sh[r], f256_ctl16(2 * t, 2 * t + 1));
                }
#pragma GCC unroll 4
                for (int c = 0; c < C; c++) {
                    const __m256i xq =
                        _mm256_loadu_si256((const __m256i *)(xb[c]->qs + 128 * h + 32 * t));
                    const __m256i x4 = _mm256_maddubs_epi16(b2, xq);
#pragma GCC unroll 2
                    for (int r = 0; r < R; r++) {
                        const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(lv[r], xq), x4);
                        sumi[r][c] = _mm256_add_epi32(sumi[r][c], _mm256_madd_epi16(s16[r], p16));
                    }
                }
            }
        }
        k23_block_acc(R, C, wb[0]->d, wb[R - 1]->d, xb, sumi, acc);
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) y[c * ldy + r] = q_hsum8(acc[r][c]);
}

/* Weight row w of type wt against C <= F256_COLS activation rows, each
 * kernel instantiated for every C. */
#define F256_CASES(call)                                                                           \
    switch (C) {                                                                                   \
    case 1:                                                                                        \
        call(1);                                                                                   \
        break;                                                                                     \
    case 2:                                                                                        \
        call(2);                                                                                   \
        break;                                                                                     \
    case 3:                                                                                        \
        call(3);                                                                                   \
        break;                                                                                     \
    default:                                                                                       \
        call(4);                                                                                   \
        break;                                                                                     \
    }
static void f256_cols(moe_dtype wt, int C, int64_t nblk, const void *w, const char *x, size_t xrb,
                      float *y, int64_t ldy) {
#define F256_Q41(n) dot_q41_fast(0, n, nblk, w, x, xrb, y, ldy)
#define F256_Q51(n) dot_q41_fast(1, n, nblk, w, x, xrb, y, ldy)
#define F256_Q50(n) dot_q5_0_fast(n, nblk, w, x, xrb, y, ldy)
#define F256_Q2K(n) dot_q2_K_fast(1, n, nblk, w, 0, x, xrb, y, ldy)
#define F256_Q3K(n) dot_q3_K_fast(1, n, nblk, w, 0, x, xrb, y, ldy)
    switch (wt) {
    case MOE_DTYPE_Q4_1:
        F256_CASES(F256_Q41)
        break;
    case MOE_DTYPE_Q5_1:
        F256_CASES(F256_Q51)
        break;
    case MOE_DTYPE_Q5_0:
        F256_CASES(F256_Q50)
        break;
    case MOE_DTYPE_Q2_K:
        F256_CASES(F256_Q2K)
        break;
    default:
        F256_CASES(F256_Q3K)
        break;
    }
#undef F256_Q41
#undef F256_Q51
#undef F256_Q50
#undef F256_Q2K
#undef F256_Q3K
}

/* Rows r0..r1 of a Q4_1, Q5_0, Q5_1, Q2_K or Q3_K matrix against nb
 * activation rows, weight row outer; rows from `streams` contiguous parts
 * of the range in turn (as the files' other one-row kernels: that many
 * sequential read streams). pairs: Q2_K and Q3_K decode two rows at a
 * time (from L2 ~10% faster with AVX-512's 32 registers, no faster with
 * AVX2's 16). */
static void f256_gemm(moe_dtype wt, int streams, int pairs, int64_t k, const void *W, int64_t r0,
                      int64_t r1, const void *X, int64_t nb, float *Y, int64_t ldy) {
    const size_t wrb = moe_dtype_row_bytes(wt, k);
    const size_t xrb = moe_dtype_row_bytes(moe_dtype_dot_type(wt), k);
    const int64_t nblk = k / (int64_t)moe_dtype_block_elems(wt);
    if (pairs && (wt == MOE_DTYPE_Q2_K || wt == MOE_DTYPE_Q3_K) && nb == 1) {
        /* pairs of rows, the odd one last */
        const int64_t n2 = (r1 - r0) / 2, per = (n2 + streams - 1) / streams;
        for (int64_t i = 0; i < per * streams; i++) {
            const int64_t u = i % streams * per + i / streams;
            if (u >= n2) continue;
            const int64_t r = r0 + 2 * u;
            if (wt == MOE_DTYPE_Q2_K)
                dot_q2_K_fast(2, 1, nblk, (const char *)W + (size_t)r * wrb, wrb, X, xrb, Y + r,
                              ldy);
            else
                dot_q3_K_fast(2, 1, nblk, (const char *)W + (size_t)r * wrb, wrb, X, xrb, Y + r,
                              ldy);
        }
        r0 += 2 * n2;
    }
    const int64_t n = r1 - r0, per = (n + streams - 1) / streams;
    for (int64_t i = 0; i < per * streams; i++) {
        const int64_t u = i % streams * per + i / streams;
        if (u >= n) continue;
        const int64_t r = r0 + u;
        for (int64_t b = 0; b < nb; b += F256_COLS) {
            const int C = (int)(nb - b < F256_COLS ? nb - b : F256_COLS);
            f256_cols(wt, C, nblk, (const char *)W + (size_t)r * wrb,
                      (const char *)X + (size_t)b * xrb, xrb, Y + b * ldy + r, ldy);
        }
    }
}

/* ==== Q8_K activations ===================================================== */

/* quant_scalar.c's quantize_act_q8_K, 8 floats a step (both levels): the
 * same max (the first element of the largest magnitude), the same iscale,
 * each q the same float product rounded by the same 1.5 * 2^23 trick, the
 * same sums: the same bytes. */
static void f256_quant_q8_K(const float *x, moe_block_q8_K *y, int64_t n) {
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t b = 0; b < n / MOE_QK_K; b++, x += MOE_QK_K) {
        __m256 am = _mm256_setzero_ps();
        for (int j = 0; j < MOE_QK_K; j += 8)
            am = _mm256_max_ps(am, _mm256_and_ps(_mm256_loadu_ps(x + j), absm));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = 0.0f;
        const __m256 av = _mm256_set1_ps(amax);
        for (int j = 0; j < MOE_QK_K; j += 8) {
            const int e = _mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), absm), av, _CMP_EQ_OQ));
            if (e) {
                max = x[j + __builtin_ctz((unsigned)e)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 is = _mm256_set1_ps(iscale), magic = _mm256_set1_ps(12582912.0f);
        const __m256i mant = _mm256_set1_epi32(0x007fffff), half = _mm256_set1_epi32(0x00400000);
        const __m256i cap = _mm256_set1_epi32(127);
        for (int j = 0; j < MOE_QK_K; j += 16) {
            __m256i v[2];
            for (int h = 0; h < 2; h++) {
                const __m256i u = _mm256_castps_si256(
                    _mm256_add_ps(_mm256_mul_ps(is, _mm256_loadu_ps(x + j + 8 * h)), magic));
                v[h] = _mm256_min_epi32(_mm256_sub_epi32(_mm256_and_si256(u, mant), half), cap);
            }
            /* 16 int32 in [-128, 127] -> 16 int8 in order */
            const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(v[0], v[1]), 0xd8);
            const __m128i w8 =
                _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
            _mm_storeu_si128((__m128i *)(y[b].qs + j), w8);
        }
        for (int g = 0; g < 16; g += 2) { /* sums of 16, 2 a ymm: sums of 8 of q + 128 */
            const __m256i u =
                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(y[b].qs + 16 * g)),
                                 _mm256_set1_epi8((char)0x80));
            _Alignas(32) uint64_t s8[4];
            _mm256_store_si256((__m256i *)s8, _mm256_sad_epu8(u, _mm256_setzero_si256()));
            for (int i = 0; i < 2; i++)
                y[b].bsums[g + i] = (int16_t)((int)(s8[2 * i] + s8[2 * i + 1]) - 16 * 128);
        }
        y[b].d = 1 / iscale;
    }
}
