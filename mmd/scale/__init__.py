"""Scale-out on Dask distributed (`scale:` in params): the embed stage's cache misses, the detectors'
scoring (evaluate, gate, review) and the synthetic candidates' SemSim / DisSim passes (select), cut into
shards by content hash and run on Dask workers; the driver merges in the original order and alone
writes. With `scale.engine: none` (the default) nothing here is imported and every stage runs in one
process, as before.

- `shards`: which shard a key belongs to, merging the shards' results back in order (pure numpy);
- `engine`: connecting to a scheduler or starting a LocalCluster, running a task per shard;
- `worker`: what runs on a worker (models loaded once per worker, in a worker plugin);
- `spec`: the params a worker rebuilds its settings from;
- `embed`, `score`, `synth`: the three kinds of sharded work.
"""
