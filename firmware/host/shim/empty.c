/* keeps a kernel library non-empty when the model needs no flavour-specific kernel */
int tinysent_empty_translation_unit_guard;
