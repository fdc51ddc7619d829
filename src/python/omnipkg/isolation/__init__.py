"""Compatibility package: omnipkg 3.4.1 kept its daemon client under
omnipkg.isolation.worker_daemon."""
