// Every schema of the squeezeae namespace, in one place. Kernels live in cpu/ and cuda/ (one file per op
// and backend), autocast in autocast.cpp, autograd in autograd.cpp; fake (meta) kernels are registered
// from Python (squeezeae_ext/_ops.py).
#include <Python.h>
#include <torch/library.h>

#include "cpu/paths.h"

namespace {

// _C.cpu_paths() -> dict: which CPU paths the kernels take here (see cpu/paths.h).
PyObject* cpu_paths(PyObject*, PyObject*) {
  const squeezeae::cpu::CpuPaths p = squeezeae::cpu::cpu_paths();
  return Py_BuildValue("{s:s,s:s,s:L,s:L,s:L,s:L,s:s,s:L,s:L,s:s}", "gemm", p.gemm, "simd", p.simd, "l2_bytes",
                       static_cast<long long>(p.l2_bytes), "l3_bytes", static_cast<long long>(p.l3_bytes),
                       "forward_tile_pixels", static_cast<long long>(p.forward_tile_pixels),
                       "max_unpool2d_stream_bytes", static_cast<long long>(p.max_unpool2d_stream_bytes), "bf16",
                       p.bf16, "winograd_min_pixels", static_cast<long long>(p.winograd_min_pixels),
                       "planar_max_call_pixels", static_cast<long long>(p.planar_max_call_pixels), "forward_tiles",
                       p.forward_tiles);
}

PyMethodDef methods[] = {
    {"cpu_paths", cpu_paths, METH_NOARGS, "Which CPU paths the kernels take on this machine."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

// No pybind: importing squeezeae_ext._C runs the static TORCH_LIBRARY initialisers below; its one function
// reports the CPU paths.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}

TORCH_LIBRARY(squeezeae, m) {
  // relu(cat([relu(e1(s)), relu(e3(s))], 1)) with s = relu(squeeze(x)); 3x3 conv with padding 1.
  m.def(
      "fire(Tensor x, Tensor squeeze_weight, Tensor? squeeze_bias, Tensor expand1x1_weight, "
      "Tensor? expand1x1_bias, Tensor expand3x3_weight, Tensor? expand3x3_bias) -> Tensor");
  // The squeeze activation is recomputed from x; the ReLU masks of the expands come from `output`.
  m.def(
      "fire_backward(Tensor grad_output, Tensor x, Tensor output, Tensor squeeze_weight, "
      "Tensor? squeeze_bias, Tensor expand1x1_weight, Tensor expand3x3_weight) -> "
      "(Tensor grad_x, Tensor grad_squeeze_weight, Tensor grad_squeeze_bias, "
      "Tensor grad_expand1x1_weight, Tensor grad_expand1x1_bias, "
      "Tensor grad_expand3x3_weight, Tensor grad_expand3x3_bias)");

  // F.max_unpool2d with an explicit output_size (the Python layer computes the default). kernel_size,
  // stride and padding describe the pooling windows the indices came from; kernels may use them to gather
  // instead of scatter, but the result never depends on it. Duplicate indices: the input element latest in
  // row-major (h, w) order of its plane wins.
  m.def(
      "max_unpool2d(Tensor input, Tensor indices, int[2] kernel_size, int[2] stride, int[2] padding, "
      "SymInt[2] output_size) -> Tensor");
  // grad_input[n, c, i] = grad_output[n, c, indices[n, c, i]], as PyTorch's max_unpool2d derivative.
  m.def("max_unpool2d_backward(Tensor grad_output, Tensor indices) -> Tensor");

  // F.max_pool2d (values only; with indices below), ATen's window rule and tie/NaN rule to the bit. Indices are
  // flat h * W + w positions in the input's planes.
  m.def(
      "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
      "bool ceil_mode) -> Tensor");
  m.def(
      "max_pool2d_with_indices(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  // grad_input (input's shape and layout) = zeros with grad_output added at the indices.
  m.def("max_pool2d_backward(Tensor grad_output, Tensor input, Tensor indices) -> Tensor");

  // fire(max_unpool2d(input, indices, ...)) without materialising the unpooled tensor.
  m.def(
      "unpool_fire(Tensor input, Tensor indices, Tensor squeeze_weight, Tensor? squeeze_bias, "
      "Tensor expand1x1_weight, Tensor? expand1x1_bias, Tensor expand3x3_weight, Tensor? expand3x3_bias, "
      "int[2] kernel_size, int[2] stride, int[2] padding, SymInt[2] output_size) -> Tensor");
  m.def(
      "unpool_fire_backward(Tensor grad_output, Tensor input, Tensor indices, Tensor output, "
      "Tensor squeeze_weight, Tensor? squeeze_bias, Tensor expand1x1_weight, Tensor expand3x3_weight, "
      "int[2] kernel_size, int[2] stride, int[2] padding) -> "
      "(Tensor grad_input, Tensor grad_squeeze_weight, Tensor grad_squeeze_bias, "
      "Tensor grad_expand1x1_weight, Tensor grad_expand1x1_bias, "
      "Tensor grad_expand3x3_weight, Tensor grad_expand3x3_bias)");
}
