"""Security: least-privilege Redis ACLs, TLS, message encryption, principals and tokens."""
