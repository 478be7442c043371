// The eliminating layer's attention on the CPU, fused: the context and the attention each key receives, per head,
// without writing the [H, n, n] probabilities out (tiltbench/fused.py loads it; README "Batch 1" says why).
//
// For each (row b, head h, block of up to `block` queries), on one thread:
//   S = scaling * Q_block K^T        one GEMM into a per-thread [block, n] buffer that stays in L2
//   P = softmax(S) row by row         in place
//   received[b, h, :] += sum_i P[i, :]  (per block, summed after the loop: no two threads write one row)
//   self_attention[b, h, i] = P[i, i]
//   context[b, block, h] = P V        one GEMM written straight into the [B, n, H*d] layout the output Linear reads
// Blocks run in parallel over torch's intra-op threads (at::parallel_for). Every key and query is real: the caller
// uses it only for rows without padding. The arithmetic is fp32; the GEMMs are the BLAS torch was built with (sgemm_).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

namespace {

// Column-major BLAS: C (m x n, ldc) = alpha * op(A) op(B) + beta * C.
void gemm(char transa, char transb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
          int ldb, float beta, float* c, int ldc) {
  sgemm_(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// Softmax of `rows` rows of length n in place; adds each column's sum into `received` and writes the diagonal
// (query first_query + r against key first_query + r) into `self_attention`.
void softmax_rows(float* s, int64_t rows, int64_t n, int64_t first_query, float* received, float* self_attention) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * n;
    float top = row[0];
    for (int64_t j = 1; j < n; ++j) top = std::max(top, row[j]);
    float total = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      const float e = std::exp(row[j] - top);
      row[j] = e;
      total += e;
    }
    const float inverse = 1.f / total;
    for (int64_t j = 0; j < n; ++j) {
      row[j] *= inverse;
      received[j] += row[j];
    }
    self_attention[first_query + r] = row[first_query + r];
  }
}

// q, k, v: [B, n, H*d] fp32 or bf16 (the query/key/value Linear outputs). bf16 is computed in fp32 (converted
// here, not in Python: four conversions a layer cost a short input more in Python's dispatch than in arithmetic)
// and the context is returned in bf16; received and self_attention are fp32 either way.
// Returns (context [B, n, H*d], received [B, H, n], self_attention [B, H, n]).
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_received(const at::Tensor& q, const at::Tensor& k,
                                                                  const at::Tensor& v, int64_t heads,
                                                                  double scaling, int64_t block) {
  TORCH_CHECK(q.dim() == 3 && q.sizes() == k.sizes() && q.sizes() == v.sizes(), "q, k, v must be [B, n, H*d]");
  const auto dtype = q.scalar_type();
  TORCH_CHECK((dtype == at::kFloat || dtype == at::kBFloat16) && k.scalar_type() == dtype &&
                  v.scalar_type() == dtype,
              "fp32 or bf16, the same for q, k and v");
  TORCH_CHECK(q.device().is_cpu(), "CPU only");
  TORCH_CHECK(heads > 0 && q.size(2) > 0 && q.size(2) % heads == 0 && block > 0, "H*d must split into `heads` heads");
  const at::Tensor qc = q.to(at::kFloat).contiguous(), kc = k.to(at::kFloat).contiguous(),
                   vc = v.to(at::kFloat).contiguous();
  const int64_t B = q.size(0), n = q.size(1), hd = q.size(2), d = hd / heads;
  const int64_t blocks = (n + block - 1) / block;
  const auto fp32 = qc.options();
  auto context = at::empty({B, n, hd}, fp32);
  auto partial = at::zeros({B, heads, blocks, n}, fp32);  // received, per query block
  auto self_attention = at::empty({B, heads, n}, fp32);
  if (B == 0 || n == 0) return {context.to(dtype), partial.sum(2), self_attention};
  const float* qp = qc.data_ptr<float>();
  const float* kp = kc.data_ptr<float>();
  const float* vp = vc.data_ptr<float>();
  float* cp = context.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  float* sp = self_attention.data_ptr<float>();
  at::parallel_for(0, B * heads * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(std::min(block, n) * n);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / (heads * blocks), h = (t / blocks) % heads, j = t % blocks;
      const int64_t first = j * block, rows = std::min(block, n - first);
      const float* q_block = qp + (b * n + first) * hd + h * d;
      const float* k_head = kp + b * n * hd + h * d;
      const float* v_head = vp + b * n * hd + h * d;
      // Row-major S [rows, n] is column-major S^T [n, rows] = K [n, d] Q_block^T: K read transposed.
      gemm('T', 'N', n, rows, d, static_cast<float>(scaling), k_head, hd, q_block, hd, 0.f, scores.data(), n);
      softmax_rows(scores.data(), rows, n, first, pp + ((b * heads + h) * blocks + j) * n, sp + (b * heads + h) * n);
      // Row-major context rows [rows, d] (ld H*d) are column-major [d, rows] = V^T [d, n] P^T [n, rows].
      gemm('N', 'N', d, rows, n, 1.f, v_head, hd, scores.data(), n, 0.f, cp + (b * n + first) * hd + h * d, hd);
    }
  });
  return {context.to(dtype), partial.sum(2), self_attention};
}

}  // namespace

TORCH_LIBRARY(tiltbench, m) {
  m.def(
      "attention_received(Tensor q, Tensor k, Tensor v, int heads, float scaling, int block) "
      "-> (Tensor, Tensor, Tensor)");
  m.impl("attention_received", c10::DispatchKey::CPU, &attention_received);
}
