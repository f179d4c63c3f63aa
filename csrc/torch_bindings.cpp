// The one place that declares swa_ops' operators. Backends register their kernels with
// TORCH_LIBRARY_IMPL next to their launchers (csrc/cpu/, csrc/cuda/); fake kernels live in
// swa_ops/ops.py. Schema `float` is C++ double, `int` is int64_t.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(swa_ops, m) {
  // Attention of each query row over its sequence's paged K/V, causal, limited to the last
  // `sliding_window` keys when > 0; optional soft-cap, per-head sink logits, multi-token queries
  // (query_start_loc) and fp8 caches (k_scale/v_scale). Returns a new tensor shaped like query.
  m.def(
      "paged_attention(Tensor query, Tensor key_cache, Tensor value_cache, Tensor block_tables, "
      "Tensor seq_lens, float scale, int sliding_window=0, float logits_soft_cap=0.0, "
      "Tensor? sinks=None, Tensor? query_start_loc=None, int max_query_len=1, "
      "Tensor? k_scale=None, Tensor? v_scale=None) -> Tensor");
  // Writes each token's key/value into its cache slot (slot_mapping; -1 skips the token),
  // quantizing to fp8 (x / scale) when the caches are float8_e4m3fn.
  m.def(
      "reshape_and_cache(Tensor key, Tensor value, Tensor(a!) key_cache, Tensor(b!) value_cache, "
      "Tensor slot_mapping, Tensor? k_scale=None, Tensor? v_scale=None) -> ()");
}

// `import swa_ops._C` only needs a module object: loading the shared library runs the
// registrations above. No pybind11.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
