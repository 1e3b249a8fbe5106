#pragma once
namespace tflite {
void InitializeTarget();
}  // namespace tflite
