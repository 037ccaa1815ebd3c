// Runtime settings for Hive Gateway; host, port and --fork come from the command line
// (tests/bench/mesh_run.py). Found by hive-gateway in its working directory.
import { defineConfig } from '@graphql-hive/gateway';

export const gatewayConfig = defineConfig({
  graphiql: false,
  landingPage: false,
  // The supergraph is a file composed once; re-reading it buys nothing in a bench.
  pollingInterval: 0,
});
