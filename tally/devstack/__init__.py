"""The local tooling: the stack of real services on this machine, its provisioning, the front
door, the local Spark cluster, the demo and the traffic generator. Production code never
imports it."""
