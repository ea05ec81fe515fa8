"""The files stages hand each other, each read and written only through its module here: vectors (the
embeddings, the pool's, the selected features), the synthetic pool (and its mirror in the store), and a
model's scores. Items and quarantine records have their own modules (`mmd.items`, `mmd.quarantine`)."""
