"""What the tests, the benches and .ci/run share: real gateways, the Kubernetes emulator wiring,
the compose stack, a local stack and HTTP probes. Not shipped in the distribution; imported from
the repository root."""
