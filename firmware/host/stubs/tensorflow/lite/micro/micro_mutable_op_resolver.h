#pragma once
#include "tensorflow/lite/c/common.h"
namespace tflite {
class MicroOpResolver {
};
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
  TfLiteStatus AddAdd();
  TfLiteStatus AddCast();
  TfLiteStatus AddFullyConnected();
  TfLiteStatus AddGather();
  TfLiteStatus AddLogistic();
  TfLiteStatus AddMul();
  TfLiteStatus AddSplit();
  TfLiteStatus AddSub();
  TfLiteStatus AddTanh();
  TfLiteStatus AddUnpack();
};
}  // namespace tflite
