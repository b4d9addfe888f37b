#!/usr/bin/env node
// PrismQ Runner example client for Node.js: @grpc/grpc-js with the contract loaded
// from runner.proto at run time by @grpc/proto-loader (no generated code).
//
// Usage: node client.js [--target HOST:PORT] [--proto-dir DIR] [--timeout S]
//                       [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] [--tls-server-name NAME]
//                       MODULE [NAME=VALUE ...]
//
// Starts a run of MODULE, follows its output live (the run's stdout bytes to our
// stdout, its stderr bytes to our stderr), then asks WaitRun for the final run and
// prints one line "run <id> <STATUS> exit_code=<n> ..." on stderr.
// The target comes from --target, else PRISMQ_TARGET, else 127.0.0.1:50051 (plain
// HTTP/2; "unix:///path" also works). --timeout (seconds, default 30) is the deadline
// of each unary call; the output stream has none, since a run may last long.
// TLS, as with the prismq CLI: a "tls://HOST:PORT" target or any --tls-* option (or its
// variable PRISMQ_TLS_CA, PRISMQ_TLS_CERT, PRISMQ_TLS_KEY, PRISMQ_TLS_SERVER_NAME)
// connects with TLS. --tls-ca: the CAs (PEM) the server certificate must chain to
// (default: Node's root certificates); --tls-cert and --tls-key: a client certificate
// and its key, for a server that requires one (its URI SAN, DNS SAN or CN becomes the
// run's owner); --tls-server-name: the name the server certificate must match
// (default: the target's host).
// Exit status: 0 when the run COMPLETED, 1 when it ended otherwise, 2 on a gRPC error
// (printed as "error: CODE: details"), 64 on a usage error.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_TARGET = '127.0.0.1:50051';
const RUNNER_PROTO = 'prismq/runner/v1/runner.proto';

function usage(msg) {
  process.stderr.write(`client.js: ${msg}\nusage: node client.js [--target HOST:PORT] ` +
                       '[--proto-dir DIR] [--timeout S] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] ' +
                       '[--tls-server-name NAME] MODULE [NAME=VALUE ...]\n');
  process.exit(64);
}

function parseArgs(argv) {
  const opts = {
    target: process.env.PRISMQ_TARGET || DEFAULT_TARGET,
    protoDir: process.env.PRISMQ_PROTO || path.join(__dirname, '..', '..', '..', 'proto'),
    timeoutS: 30,
    // An empty variable counts as unset, as for the prismq CLI.
    tlsCa: process.env.PRISMQ_TLS_CA || null,
    tlsCert: process.env.PRISMQ_TLS_CERT || null,
    tlsKey: process.env.PRISMQ_TLS_KEY || null,
    tlsServerName: process.env.PRISMQ_TLS_SERVER_NAME || null,
    module: null,
    parameters: {},
  };
  const flags = {'--target': 'target', '--proto-dir': 'protoDir', '--timeout': 'timeoutS', '--tls-ca': 'tlsCa',
                 '--tls-cert': 'tlsCert', '--tls-key': 'tlsKey', '--tls-server-name': 'tlsServerName'};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a in flags) {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      opts[flags[a]] = argv[++i];
    } else if (opts.module === null) {
      opts.module = a;
    } else {
      const eq = a.indexOf('=');
      if (eq <= 0) usage(`a parameter must be NAME=VALUE, not "${a}"`);
      opts.parameters[a.slice(0, eq)] = a.slice(eq + 1);
    }
  }
  if (opts.module === null) usage('MODULE is required');
  opts.timeoutS = Number(opts.timeoutS);
  if (!(opts.timeoutS > 0)) usage('--timeout must be a positive number of seconds');
  if (!opts.tlsCert !== !opts.tlsKey) usage('--tls-cert and --tls-key go together');
  return opts;
}

// The content of a PEM file, or null without one.
function readPem(file) {
  if (!file) return null;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    return usage(`cannot read ${file}: ${err.message}`);
  }
}

// A Runner client: TLS for a tls:// target or any --tls-* option, else plain HTTP/2.
function connect(pkg, opts) {
  const tls = opts.tlsCa || opts.tlsCert || opts.tlsKey || opts.tlsServerName;
  if (!tls && !opts.target.startsWith('tls://')) {
    return new pkg.Runner(opts.target, grpc.credentials.createInsecure());
  }
  const creds = grpc.credentials.createSsl(readPem(opts.tlsCa), readPem(opts.tlsKey), readPem(opts.tlsCert));
  const options = opts.tlsServerName ? {'grpc.ssl_target_name_override': opts.tlsServerName} : {};
  return new pkg.Runner(opts.target.replace(/^tls:\/\//, ''), creds, options);
}

// Enums as their names, 64-bit integers as strings (JS numbers lose precision past
// 2^53), field names exactly as in the .proto.
function loadRunner(protoDir) {
  const def = protoLoader.loadSync(RUNNER_PROTO, {
    includeDirs: [protoDir],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(def).prismq.runner.v1;
}

function deadline(opts) {
  return {deadline: Date.now() + opts.timeoutS * 1000};
}

// Promise wrapper of a unary call.
function unary(client, method, req, opts) {
  return new Promise((resolve, reject) => {
    client[method](req, deadline(opts), (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

// Copies the run's output live to stdout/stderr until the server ends the stream.
// With follow the last chunk carries the terminal run instead of data; WaitRun
// returns it below, so that chunk needs nothing here.
function follow(client, runId) {
  return new Promise((resolve, reject) => {
    const call = client.StreamOutput({run_id: runId, follow: true});
    call.on('data', (chunk) => {
      if (chunk.run) return;
      const out = chunk.stream === 'OUTPUT_STREAM_STDERR' ? process.stderr : process.stdout;
      out.write(chunk.data);
    });
    call.on('error', reject);
    call.on('end', resolve);
  });
}

function statusLine(run) {
  const parts = ['run', run.run_id, run.status.replace('RUN_STATUS_', ''), `exit_code=${run.exit_code}`];
  if (run.term_signal) parts.push(`signal=${run.term_signal}`);
  if (run.error_message) parts.push(`error=${JSON.stringify(run.error_message)}`);
  return parts.join(' ');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pkg = loadRunner(opts.protoDir);
  const client = connect(pkg, opts);
  try {
    const run = await unary(client, 'StartRun', {module_id: opts.module, parameters: opts.parameters}, opts);
    await follow(client, run.run_id);
    // timeout_ms 0: wait until terminal, bounded by the call's own deadline.
    const final = await unary(client, 'WaitRun', {run_id: run.run_id}, opts);
    process.stderr.write(statusLine(final) + '\n');
    return final.status === 'RUN_STATUS_COMPLETED' ? 0 : 1;
  } catch (err) {
    if (err.code === undefined) throw err;
    process.stderr.write(`error: ${grpc.status[err.code]}: ${err.details}\n`);
    return 2;
  } finally {
    client.close();
  }
}

// Sets exitCode rather than calling exit(), so that stdout drains first when piped.
main().then((code) => { process.exitCode = code; });
