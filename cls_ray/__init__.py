"""cls-ray: continual learning for language models on Ray (Complementary Learning Systems).

The library: pure logic over injected services (`cls_ray.ports`). Ray actors and Serve
deployments live in the `actors` package, which imports this one, never the reverse; the CLI
(`cls_ray.cli`) wires them together.
"""
