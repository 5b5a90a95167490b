"""PyTorch files (`.pt`, `.pth`, `.bin`: torch.save's zip and legacy layouts, and sharded sets through
`pytorch_model.bin.index.json`) read without torch: pickles through an allowlisting unpickler that
runs nothing a file brings, tensors materialised from their storages' bytes with numpy.
May import formats/ (dtypes, variables, npz's zip checks, safetensors' index reader) and storage/."""
