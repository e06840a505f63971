"""The Serve application, one deployment per module: `generator` (engines by version, batched
next steps), `retriever` (embedder + Milvus, batched queries), `scorer` (the PRM), `ingress`
(HTTP, RGR sessions in lock-step), `handles` (the pure loop's `Engine` and `Memory` over
deployment handles) and `app` (the builder Serve imports)."""
