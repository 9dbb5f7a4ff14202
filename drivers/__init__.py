"""Hardware access for jigd: transports, SMP hub client, rig controller client, driver registry."""
