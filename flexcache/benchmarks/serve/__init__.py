"""The end-to-end serving benchmark (`flexcache bench serve`): workloads and model profiles so far."""
