"""Ray glue only: actors, Serve deployments (`actors.serve`), handles, starting and stopping Ray
and Serve. Each module wraps objects of `cls_ray`; nothing in `cls_ray` but its CLI imports it."""
