// grpc_ref_server: the stock gRPC C++ server the unary benchmark compares prismqd with.
//
//   grpc_ref_server [PORT] [--tls CERT KEY]    (PORT default 0: a kernel-chosen port)
//
// With --tls, serves over TLS (grpc::SslServerCredentials, default options: no client
// certificate requested) with the PEM certificate chain CERT and private key KEY;
// otherwise plaintext (h2c).
//
// Serves, on 127.0.0.1, the default health service (grpc::EnableDefaultHealthCheckService,
// so grpc.health.v1.Health/Check with service "" answers SERVING) and one trivial unary
// method, prismq.runner.v1.Runner/GetRun, which answers every request with a fixed Run
// shaped like the one prismqd returns for a finished run (same fields set, so about the
// same response size) but looks nothing up. Every other Runner method is UNIMPLEMENTED.
// Everything else is gRPC's defaults: the synchronous server API with its own thread
// pool, no tuning.
//
// Prints "listening on 127.0.0.1:PORT" once serving, then runs until SIGTERM or SIGINT
// and exits 0. Built by scripts/bench/run.sh (g++, pkg-config grpc++ protobuf) from
// runner.proto's generated C++ code in the build directory; never committed as a binary.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "prismq/runner/v1/runner.grpc.pb.h"

namespace {

namespace pb = prismq::runner::v1;

class RunnerRef final : public pb::Runner::Service {
 public:
  RunnerRef() {
    canned_.set_module_id("emit");
    canned_.set_status(pb::RUN_STATUS_COMPLETED);
    (*canned_.mutable_parameters())["bytes"] = "100";
    canned_.set_created_at_ms(1795716882660);
    canned_.set_started_at_ms(1795716882660);
    canned_.set_finished_at_ms(1795716882662);
    canned_.set_pid(8281);
    canned_.set_stdout_bytes(100);
    canned_.set_max_rss_kb(1664);
  }

  grpc::Status GetRun(grpc::ServerContext*, const pb::GetRunRequest* req, pb::Run* resp) override {
    *resp = canned_;
    resp->set_run_id(req->run_id());
    return grpc::Status::OK;
  }

 private:
  pb::Run canned_;
};

// The whole file at path, or false if it cannot be read.
bool read_file(std::string* out, const char* path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return f.good() && !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  const char* tls_cert = nullptr;
  const char* tls_key = nullptr;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--tls") == 0 && i + 2 < argc) {
      tls_cert = argv[++i];
      tls_key = argv[++i];
    } else if (argv[i][0] != '-') {
      port = std::atoi(argv[i]);
    } else {
      std::fprintf(stderr, "usage: grpc_ref_server [PORT] [--tls CERT KEY]\n");
      return 2;
    }
  }
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (tls_cert) {
    grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
    if (!read_file(&pair.cert_chain, tls_cert) || !read_file(&pair.private_key, tls_key)) {
      std::fprintf(stderr, "grpc_ref_server: cannot read %s or %s\n", tls_cert, tls_key);
      return 1;
    }
    grpc::SslServerCredentialsOptions opts;
    opts.pem_key_cert_pairs.push_back(pair);
    creds = grpc::SslServerCredentials(opts);
  }
  // Block the stop signals in every thread gRPC starts; main waits for them below.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  grpc::EnableDefaultHealthCheckService(true);
  RunnerRef runner;
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(port), creds, &bound);
  builder.RegisterService(&runner);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound == 0) {
    std::fprintf(stderr, "grpc_ref_server: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  std::printf("listening on 127.0.0.1:%d\n", bound);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop, &sig);
  server->Shutdown();
  server->Wait();
  return 0;
}
