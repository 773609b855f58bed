// pp-grpc-frontend: the gRPC transport of one Prediction Provider worker, outside Python.
//
// grpcio's asyncio binding spends more CPU per call than the whole REST path does
// (HTTP/2 framing, the completion-queue poller thread and its hand-offs to the event
// loop). This process terminates gRPC instead: it accepts every unary call on the
// gRPC port, without parsing the protobuf messages, and forwards the method name,
// the call's metadata, the peer and the serialized request over a Unix socket to the
// worker that started it. The worker decodes, authenticates, predicts and answers
// with a status and the serialized reply. So every rule (RBAC, rate limits, audit,
// validation) stays in one place, the Python servicer; this process only moves bytes.
//
// One front end runs per worker, all on the same port (SO_REUSEPORT, on by default in
// gRPC): the kernel spreads connections over them. The front end ends when its worker
// closes the socket, so it never outlives the worker.
//
// Frames on the socket, little-endian:
//   to the worker:   u32 size | u64 call | u16 len, method | u16 len, peer |
//                    u16 count, count x (u16 len, key | u32 len, value) | request bytes
//   from the worker: u32 size | u64 call | u8 status | u16 len, message | reply bytes
//   `size` counts the bytes after itself. Call 0 from the front end is its hello: the
//   message bytes are the decimal port it bound.

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

constexpr size_t kMaxKey = 0xffff;

void put_u16(std::string& out, size_t value) {
  uint16_t v = static_cast<uint16_t>(value);
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_u32(std::string& out, size_t value) {
  uint32_t v = static_cast<uint32_t>(value);
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }

void put_short(std::string& out, const char* data, size_t size) {
  size = size > kMaxKey ? kMaxKey : size;
  put_u16(out, size);
  out.append(data, size);
}

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool read_all(int fd, char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::read(fd, data, size);
    if (n == 0) return false;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

class Worker;

// One call: read the single request message, forward it, and finish when the worker
// answers (or the client cancels first).
class Call final : public grpc::ServerGenericBidiReactor {
 public:
  Call(Worker* worker, grpc::GenericCallbackServerContext* context, uint64_t id)
      : worker_(worker), context_(context), id_(id) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override;
  void OnCancel() override;
  void OnWriteDone(bool) override {}
  void OnDone() override;

  // Called once, by whoever takes the call out of the worker's table.
  void Answer(grpc::StatusCode code, const std::string& message, const char* reply, size_t size) {
    if (code != grpc::StatusCode::OK) {
      Finish(grpc::Status(code, message));
      return;
    }
    grpc::Slice slice(reply, size);
    response_ = grpc::ByteBuffer(&slice, 1);
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
  }

 private:
  Worker* worker_;
  grpc::GenericCallbackServerContext* context_;
  uint64_t id_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
};

// The socket to the worker and the calls waiting for its answers.
class Worker {
 public:
  explicit Worker(int fd) : fd_(fd) {}

  uint64_t next_id() { return next_id_.fetch_add(1, std::memory_order_relaxed); }

  void Forward(Call* call, uint64_t id, grpc::GenericCallbackServerContext* context,
               grpc::ByteBuffer& request) {
    std::string frame;
    frame.reserve(256 + request.Length());
    put_u32(frame, 0);  // size, filled in below
    put_u64(frame, id);
    put_short(frame, context->method().data(), context->method().size());
    std::string peer = context->peer();
    put_short(frame, peer.data(), peer.size());
    const auto& metadata = context->client_metadata();
    put_u16(frame, metadata.size() > kMaxKey ? kMaxKey : metadata.size());
    size_t count = 0;
    for (const auto& [key, value] : metadata) {
      if (++count > kMaxKey) break;
      put_short(frame, key.data(), key.size());
      put_u32(frame, value.size());
      frame.append(value.data(), value.size());
    }
    std::vector<grpc::Slice> slices;
    if (!request.Dump(&slices).ok()) {
      call->Answer(grpc::StatusCode::INTERNAL, "could not read the request", nullptr, 0);
      return;
    }
    for (const auto& slice : slices) frame.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    uint32_t size = static_cast<uint32_t>(frame.size() - 4);
    std::memcpy(frame.data(), &size, sizeof size);
    {
      std::lock_guard<std::mutex> lock(calls_mutex_);
      calls_[id] = call;
    }
    bool sent;
    {
      std::lock_guard<std::mutex> lock(write_mutex_);
      sent = write_all(fd_, frame.data(), frame.size());
    }
    if (!sent) {
      Call* taken = Take(id);
      if (taken != nullptr) taken->Answer(grpc::StatusCode::UNAVAILABLE, "the worker is gone", nullptr, 0);
    }
  }

  Call* Take(uint64_t id) {
    std::lock_guard<std::mutex> lock(calls_mutex_);
    auto found = calls_.find(id);
    if (found == calls_.end()) return nullptr;
    Call* call = found->second;
    calls_.erase(found);
    return call;
  }

  bool Hello(int port) {
    std::string frame;
    std::string text = std::to_string(port);
    put_u32(frame, 8 + text.size());
    put_u64(frame, 0);
    frame += text;
    return write_all(fd_, frame.data(), frame.size());
  }

  // Reads answers until the worker closes the socket.
  void ReadAnswers() {
    std::vector<char> body;
    for (;;) {
      uint32_t size;
      if (!read_all(fd_, reinterpret_cast<char*>(&size), sizeof size)) return;
      if (size < 11) return;
      body.resize(size);
      if (!read_all(fd_, body.data(), size)) return;
      uint64_t id;
      std::memcpy(&id, body.data(), 8);
      auto code = static_cast<grpc::StatusCode>(static_cast<uint8_t>(body[8]));
      uint16_t message_size;
      std::memcpy(&message_size, body.data() + 9, 2);
      if (11u + message_size > size) return;
      std::string message(body.data() + 11, message_size);
      Call* call = Take(id);
      if (call == nullptr) continue;  // cancelled meanwhile
      size_t offset = 11u + message_size;
      call->Answer(code, message, body.data() + offset, size - offset);
    }
  }

 private:
  int fd_;
  std::atomic<uint64_t> next_id_{1};
  std::mutex write_mutex_;
  std::mutex calls_mutex_;
  std::unordered_map<uint64_t, Call*> calls_;
};

void Call::OnReadDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the call sent no request message"));
    return;
  }
  worker_->Forward(this, id_, context_, request_);
}

void Call::OnCancel() {
  if (worker_->Take(id_) != nullptr) Finish(grpc::Status::CANCELLED);
}

void Call::OnDone() { delete this; }

class Service final : public grpc::CallbackGenericService {
 public:
  explicit Service(Worker* worker) : worker_(worker) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override {
    return new Call(worker_, context, worker_->next_id());
  }

 private:
  Worker* worker_;
};

int connect_unix(const char* path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (std::strlen(path) >= sizeof address.sun_path) return -1;
  std::strcpy(address.sun_path, path);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return -1;
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s HOST:PORT WORKER_SOCKET MAX_MESSAGE_BYTES\n", argv[0]);
    return 2;
  }
  // The worker alone decides when this process ends (by closing the socket): a Ctrl-C or
  // a SIGTERM sent to the whole process group must not end it before the worker has
  // stopped taking calls, or the worker would see it die and start another.
  std::signal(SIGINT, SIG_IGN);
  std::signal(SIGTERM, SIG_IGN);
  std::signal(SIGPIPE, SIG_IGN);
  int fd = connect_unix(argv[2]);
  if (fd < 0) {
    std::fprintf(stderr, "pp-grpc-frontend: cannot connect to %s: %s\n", argv[2], std::strerror(errno));
    return 1;
  }
  Worker worker(fd);
  Service service(&worker);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(argv[1], grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(std::atoi(argv[3]));
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "pp-grpc-frontend: cannot listen on %s\n", argv[1]);
    return 1;
  }
  if (!worker.Hello(port)) return 1;
  worker.ReadAnswers();
  // The worker closed the socket: it is shutting down, and so are we.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}
