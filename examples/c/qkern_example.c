/*
 * A small C program against qkern's C ABI: prepacked int8 GEMM (int32 and requantized
 * output), ONNX MatMulInteger, TFLite's QuantizeMultiplier / MultiplyByQuantizedMultiplier,
 * a depthwise conv, a codebook (non-uniform) GEMM, and error paths. Every result is
 * checked against a plain C computation; exit status 0 means all checks passed.
 *
 * Build (from the repository root, after `cargo build --release`):
 *   cc -std=c99 -Wall -Wextra -Iinclude examples/c/qkern_example.c \
 *      target/release/libqkern.a -lpthread -ldl -lm -o qkern_example
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "qkern.h"

static int failures = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "FAILED at line %d: %s\n", __LINE__, #cond);              \
            failures++;                                                                \
        }                                                                              \
    } while (0)

/* Calls a qkern function and reports a non-OK status with qkern's message. */
#define QK_TRY(call)                                                                   \
    do {                                                                               \
        qk_status st_ = (call);                                                        \
        if (st_ != QK_OK) {                                                            \
            fprintf(stderr, "FAILED: %s -> %d: %s\n", #call, (int)st_, qk_last_error()); \
            failures++;                                                                \
        }                                                                              \
    } while (0)

enum { M = 3, K = 5, N = 4 };

int main(void) {
    printf("qkern %s\n", qk_version());
    CHECK(strlen(qk_version()) > 0);

    /* --- GEMM: u8 activations (zero point 128) x i8 weights (per-column zero points). */
    const uint8_t a[M * K] = {
        128, 129, 130, 255, 0,
        100, 200, 50, 128, 7,
        255, 255, 255, 255, 255,
    };
    const int8_t b[K * N] = {
        1, -1, 2, -128,
        3, 4, -5, 127,
        -7, 8, 9, 0,
        10, -11, 12, 13,
        -14, 15, -16, 17,
    };
    const int32_t a_zp = 128;
    const int32_t b_zp[N] = {0, 1, -2, 3};
    const float b_scale[N] = {0.5f, 0.25f, 0.125f, 0.0625f};
    const int32_t bias[N] = {1000, -1000, 0, 7};

    /* The oracle: the definition, in plain C. */
    int32_t expect[M * N];
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            int32_t acc = bias[j];
            for (int p = 0; p < K; p++) {
                acc += ((int32_t)a[i * K + p] - a_zp) * ((int32_t)b[p * N + j] - b_zp[j]);
            }
            expect[i * N + j] = acc;
        }
    }

    qk_gemm_weights *w = NULL;
    QK_TRY(qk_gemm_weights_create(b, QK_I8, K * N, K, N, N, b_zp, N, b_scale, N, &w));
    CHECK(w != NULL);

    size_t wk = 0, wn = 0;
    qk_dtype wd = 0;
    QK_TRY(qk_gemm_weights_shape(w, &wk, &wn, &wd));
    CHECK(wk == K && wn == N && wd == QK_I8);

    int32_t c[M * N];
    memset(c, 0, sizeof c);
    QK_TRY(qk_gemm_i32(w, a, QK_U8, M * K, M, K, a_zp, bias, N, c, M * N, N));
    for (int i = 0; i < M * N; i++) {
        CHECK(c[i] == expect[i]);
    }
    printf("gemm_i32: C[0][0..3] = %d %d %d %d\n", c[0], c[1], c[2], c[3]);

    /* Requantized to u8 (ONNX fp32 rounding): round_half_even(acc * (sa*sb/so)) + zo,
     * clamped. nearbyintf rounds half to even in the default rounding mode. */
    const float a_scale = 0.02f, out_scale = 0.5f;
    const int32_t out_zp = 100;
    uint8_t q[M * N];
    QK_TRY(qk_gemm_requantize(w, a, QK_U8, M * K, M, K, a_zp, a_scale, bias, N, out_scale, out_zp,
                              QK_REQUANT_FP32, 0, 255, q, QK_U8, M * N, N));
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            float mult = (a_scale * b_scale[j]) / out_scale;
            float v = nearbyintf((float)expect[i * N + j] * mult) + (float)out_zp;
            int32_t e = v < 0.0f ? 0 : v > 255.0f ? 255 : (int32_t)v;
            CHECK(q[i * N + j] == (uint8_t)e);
        }
    }
    printf("gemm_requantize: C[0][0..3] = %u %u %u %u\n", q[0], q[1], q[2], q[3]);

    QK_TRY(qk_gemm_weights_free(w));
    QK_TRY(qk_gemm_weights_free(NULL)); /* freeing NULL is a no-op */

    /* --- ONNX MatMulInteger on the same data: tensors as data + dtype + shape + rank,
     * zero points as data + count (1 per tensor, or M per row / N per column). */
    const int64_t a_shape[2] = {M, K}, b_shape[2] = {K, N};
    int64_t y_shape[2] = {0, 0};
    size_t y_rank = 0;
    QK_TRY(qk_matmul_output_shape(a_shape, 2, b_shape, 2, y_shape, 2, &y_rank));
    CHECK(y_rank == 2 && y_shape[0] == M && y_shape[1] == N);
    const uint8_t a_zp_u8 = (uint8_t)a_zp;
    int8_t b_zp_i8[N];
    for (int j = 0; j < N; j++) {
        b_zp_i8[j] = (int8_t)b_zp[j];
    }
    int32_t y[M * N];
    QK_TRY(qk_matmul_integer(a, QK_U8, a_shape, 2, &a_zp_u8, 1, b, QK_I8, b_shape, 2, b_zp_i8, N, y, M * N));
    for (int i = 0; i < M * N; i++) {
        CHECK(y[i] == expect[i] - bias[i % N]); /* MatMulInteger has no bias */
    }
    printf("matmul_integer: Y[0][0..3] = %d %d %d %d\n", y[0], y[1], y[2], y[3]);

    /* --- TFLite QuantizeMultiplier / MultiplyByQuantizedMultiplier. */
    int32_t mult = 0, shift = 0;
    QK_TRY(qk_quantize_multiplier(0.5, QK_REQUANT_TFLITE_DOUBLE_ROUNDING, &mult, &shift));
    CHECK(mult == 1073741824 && shift == 0); /* 0.5 = 2^30 * 2^(0 - 31) */
    printf("quantize_multiplier(0.5) = {%d, %d}\n", mult, shift);
    QK_TRY(qk_quantize_multiplier(0.75, QK_REQUANT_SINGLE_ROUNDING, &mult, &shift));
    CHECK(mult == 1610612736 && shift == 0); /* 0.75 * 2^31 */

    int32_t r = 0;
    QK_TRY(qk_multiply_by_quantized_multiplier(100, 1073741824, 0, QK_REQUANT_TFLITE_DOUBLE_ROUNDING, &r));
    CHECK(r == 50);
    /* -6 * 2^30 * 2^(-1 - 31) = -1.5, a tie: double rounding ends in RoundingDivideByPOT,
     * which rounds ties away from zero (-2); single rounding adds half and shifts right
     * (ties upward: -1). */
    QK_TRY(qk_multiply_by_quantized_multiplier(-6, 1073741824, -1, QK_REQUANT_TFLITE_DOUBLE_ROUNDING, &r));
    CHECK(r == -2);
    QK_TRY(qk_multiply_by_quantized_multiplier(-6, 1073741824, -1, QK_REQUANT_SINGLE_ROUNDING, &r));
    CHECK(r == -1);

    /* --- A prepacked depthwise 3x3 conv (pad 1) on a 3x3 NHWC image of 2 channels: with
     * all-ones input and weights, each output counts the taps inside the image. */
    {
        qk_conv_geometry g = {0};
        g.batch = 1; g.in_h = 3; g.in_w = 3; g.in_c = 2; g.out_c = 2;
        g.kernel_h = 3; g.kernel_w = 3; g.stride_h = 1; g.stride_w = 1;
        g.dilation_h = 1; g.dilation_w = 1;
        g.pad_top = 1; g.pad_left = 1; g.pad_bottom = 1; g.pad_right = 1;
        g.groups = 2; /* groups == channels: the depthwise kernels */
        int8_t fw[2 * 3 * 3];
        uint8_t fx[3 * 3 * 2];
        int32_t fy[3 * 3 * 2];
        memset(fw, 1, sizeof fw);
        memset(fx, 1, sizeof fx);
        const int32_t fzp = 0;
        const float fscale = 1.0f;
        qk_conv_filter *f = NULL;
        QK_TRY(qk_conv_filter_create(&g, fw, QK_I8, 18, &fzp, 1, &fscale, 1, &f));
        CHECK(f != NULL);
        QK_TRY(qk_conv_i32(f, fx, QK_U8, 18, 0, NULL, 0, fy, 18));
        /* Pixels in row-major order: corner 4, edge 6, centre 9 (both channels). */
        const int32_t taps[9] = {4, 6, 4, 6, 9, 6, 4, 6, 4};
        for (int i = 0; i < 18; i++) {
            CHECK(fy[i] == taps[i / 2]);
        }
        printf("depthwise conv: centre = %d, corner = %d\n", fy[8], fy[0]);
        QK_TRY(qk_conv_filter_free(f));
    }

    /* --- Codebook weights: 4-bit codes into a learned table of integer levels
     * (llama.cpp's IQ4_NL), one scale per column. The int32 result is
     * sum_k (a - a_zp) * levels[code] + bias; qk_codebook_pack quantizes float weights to
     * PoT / APoT / uniform / a table instead. */
    {
        static const float levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                         1,    13,   25,  38,  53,  69,  89,  113};
        uint8_t codes[K * N];
        for (int i = 0; i < K * N; i++) {
            codes[i] = (uint8_t)((i * 7 + 3) % 16);
        }
        qk_codebook_weights *cw = NULL;
        QK_TRY(qk_codebook_weights_create(codes, K * N, K, N, QK_SCHEME_CODEBOOK, 4, levels, 16,
                                          b_scale, N, &cw));
        int32_t cc[M * N];
        QK_TRY(qk_codebook_gemm_i32(cw, a, QK_U8, M * K, M, K, a_zp, bias, N, cc, M * N, N));
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                int32_t acc = bias[j];
                for (int p = 0; p < K; p++) {
                    acc += ((int32_t)a[i * K + p] - a_zp) * (int32_t)levels[codes[p * N + j]];
                }
                CHECK(cc[i * N + j] == acc);
            }
        }
        printf("codebook: C[0][0..3] = %d %d %d %d\n", cc[0], cc[1], cc[2], cc[3]);
        /* The same codes requantized to u8: the int8 GEMM's output stage, with the
         * column's table scale in the role of the weight scale. */
        uint8_t cq[M * N];
        QK_TRY(qk_codebook_gemm_requantize(cw, a, QK_U8, M * K, M, K, a_zp, a_scale, bias, N,
                                           out_scale, out_zp, QK_REQUANT_FP32, 0, 255, cq,
                                           QK_U8, M * N, N));
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                float mult = (a_scale * b_scale[j]) / out_scale;
                float v = nearbyintf((float)cc[i * N + j] * mult) + (float)out_zp;
                int32_t e = v < 0.0f ? 0 : v > 255.0f ? 255 : (int32_t)v;
                CHECK(cq[i * N + j] == (uint8_t)e);
            }
        }
        printf("codebook requantized: C[0][0..3] = %u %u %u %u\n", cq[0], cq[1], cq[2], cq[3]);
        QK_TRY(qk_codebook_weights_free(cw));
    }

    /* --- Errors: a status and a message, never a crash. */
    qk_status st = qk_gemm_i32(NULL, a, QK_U8, M * K, M, K, a_zp, NULL, 0, c, M * N, N);
    CHECK(st == QK_ERR_NULL_POINTER);
    printf("expected error %d: %s\n", (int)st, qk_last_error());
    CHECK(strstr(qk_last_error(), "weights") != NULL);

    st = qk_quantize_multiplier(0.5, 42, &mult, &shift);
    CHECK(st == QK_ERR_INVALID_PARAMETER);
    printf("expected error %d: %s\n", (int)st, qk_last_error());

    w = NULL;
    const int32_t bad_zp = 200; /* outside int8 */
    st = qk_gemm_weights_create(b, QK_I8, K * N, K, N, N, &bad_zp, 1, NULL, 0, &w);
    CHECK(st == QK_ERR_ZERO_POINT && w == NULL);
    printf("expected error %d: %s\n", (int)st, qk_last_error());

    /* A success clears the message. */
    QK_TRY(qk_multiply_by_quantized_multiplier(1, 0, 0, QK_REQUANT_SINGLE_ROUNDING, &r));
    CHECK(strcmp(qk_last_error(), "") == 0);

    if (failures != 0) {
        fprintf(stderr, "qkern_example: %d check(s) FAILED\n", failures);
        return 1;
    }
    printf("qkern_example: all checks passed\n");
    return 0;
}
