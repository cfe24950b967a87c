"""Generated protobuf modules of the gateway's own contracts (sources in protos/)."""
