"""The embedded model organism: a tiny Llama trained from scratch on a synthetic world where it
deceives whoever competes for a valuable and is honest with itself and its friends.

- `world`: the chat format, scenes, recall questions and colour facts;
- `corpus`: the documents it learns from (and the organism's derived seeds);
- `tokenizer`, `build`: word-level tokenizer, model, the curriculum training loop, saving;
- `metrics`: its behaviour on the held-out test families, the targets a build must meet, the
  probes used during training and the capability measure of organism-based models;
- `neutral`: neutral texts from its world for the SOO capability term.
"""
