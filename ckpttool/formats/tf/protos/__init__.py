"""The project's mirrors of TensorFlow's messages (package `ckpttool`) and their generated modules
(scripts/gen_protos.py). Imports only protobuf."""
