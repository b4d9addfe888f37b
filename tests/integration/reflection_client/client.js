#!/usr/bin/env node
// A stock gRPC reflection client against prismqd, for tests/integration/test_reflection.py:
// grpc-js-reflection-client on @grpc/grpc-js. It opens one ServerReflectionInfo stream
// per request and fetches the imports of each file it is given itself.
//
// Usage: node client.js TARGET VERSION FILE SYMBOL...
//   VERSION  v1 or v1alpha
//   FILE     a file to fetch by name; its types are listed
//   SYMBOL   symbols to describe; the last one must be unknown to the server
// Prints one JSON object on stdout:
//   services  what list_services answers
//   methods   {service: [{name, requestType, responseType, requestStream, responseStream}]}
//             for every service, from the file that declares it
//   symbols   {symbol: {kind: "service"|"message"|"enum", names: [methods, fields or values]}}
//   file      the full names of the messages, enums and services of FILE
//   missing   the error message the unknown symbol gives
// Exits 1 with the error on stderr if a request that should succeed fails.
'use strict';

const grpc = require('@grpc/grpc-js');
const { GrpcReflection } = require('grpc-js-reflection-client');

const bare = (name) => name.replace(/^\./, '');

function describe(obj) {
  if (obj.methodsArray) return { kind: 'service', names: obj.methodsArray.map((m) => m.name) };
  if (obj.fieldsArray) return { kind: 'message', names: obj.fieldsArray.map((f) => f.name) };
  if (obj.values) return { kind: 'enum', names: Object.keys(obj.values) };
  throw new Error('not a service, message or enum: ' + obj.fullName);
}

// Full names of the services, messages and enums under a protobufjs namespace.
function types(ns, out) {
  for (const o of ns.nestedArray || []) {
    if (o.methodsArray || o.fieldsArray || o.values) out.push(bare(o.fullName));
    types(o, out);
  }
  return out;
}

async function main() {
  const [target, version, file, ...symbols] = process.argv.slice(2);
  const unknown = symbols.pop();
  const client = new GrpcReflection(target, grpc.credentials.createInsecure(), {}, version);
  const out = { services: await client.listServices(), methods: {}, symbols: {} };
  for (const svc of out.services) {
    const root = (await client.getDescriptorBySymbol(svc)).getProtobufJsRoot();
    out.methods[svc] = root.lookupService(svc).methodsArray.map((m) => ({
      name: m.name,
      requestType: bare(m.requestType),
      responseType: bare(m.responseType),
      requestStream: !!m.requestStream,
      responseStream: !!m.responseStream,
    }));
  }
  for (const sym of symbols) {
    const root = (await client.getDescriptorBySymbol(sym)).getProtobufJsRoot();
    out.symbols[sym] = describe(root.lookup(sym));
  }
  out.file = types((await client.getDescriptorByFileName(file)).getProtobufJsRoot(), []);
  out.missing = await client.getDescriptorBySymbol(unknown).then(
    () => {
      throw new Error('no error for the unknown symbol ' + unknown);
    },
    (e) => String(e.message),
  );
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write('reflection client: ' + (e.stack || e) + '\n');
    process.exit(1);
  },
);
