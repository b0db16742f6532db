"""The oracle suite: shoal's store checked against a real etcd 3.4, one test for both."""
