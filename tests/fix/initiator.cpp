// A FIX 4.4 initiator on QuickFIX (the C++ engine, Debian's libquickfix-dev), driven line by
// line on stdin by tests/fix_quickfix.rs. It is the broker: QuickFIX runs the session layer
// (logon, sequence numbers, heartbeats, resends) and validates every message the exchange
// sends against the FIX44.xml data dictionary; a message that fails is answered with a
// Reject(3), which this program reports as TO_ADMIN 35=3.
//
// Debian's QuickFIX 1.15 headers declare exception specifications: build with -std=c++14.
//
// Usage: initiator CONFIG PASSWORD [tls]
// With `tls`, QuickFIX's SSLSocketInitiator (OpenSSL): the session settings name the CA that
// signed the exchange's certificate (CertificationAuthoritiesFile).
// Commands (stdin):
//   send TAG=VALUE|TAG=VALUE|...   an application message; 35 and 97 go into the header
//   skip N                         the next message is sent N numbers ahead (a gap)
//   logout                         a Logout(5)
//   quit
// Events (stdout, one per line, '|' for SOH):
//   LOGON | LOGOUT | FROM_ADMIN msg | FROM_APP msg | TO_ADMIN msg | TO_APP msg | ERROR text

#include <quickfix/Application.h>
#include <quickfix/FileLog.h>
#include <quickfix/FileStore.h>
#include <quickfix/MessageCracker.h>
#include <quickfix/Session.h>
#include <quickfix/SessionSettings.h>
#include <quickfix/SocketInitiator.h>
#include <quickfix/SSLSocketInitiator.h>

#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

static std::mutex out_lock;

static void emit(const std::string& kind, const std::string& text) {
  std::string line = text;
  for (auto& c : line) {
    if (c == '\x01') c = '|';
  }
  std::lock_guard<std::mutex> guard(out_lock);
  std::cout << kind << (line.empty() ? "" : " ") << line << std::endl;
}

class Broker : public FIX::Application {
 public:
  explicit Broker(std::string password) : password_(std::move(password)) {}
  FIX::SessionID session;
  bool have_session = false;

  void onCreate(const FIX::SessionID& id) override {
    session = id;
    have_session = true;
  }
  void onLogon(const FIX::SessionID&) override { emit("LOGON", ""); }
  void onLogout(const FIX::SessionID&) override { emit("LOGOUT", ""); }
  void toAdmin(FIX::Message& message, const FIX::SessionID&) override {
    FIX::MsgType type;
    message.getHeader().getField(type);
    if (type == FIX::MsgType_Logon) {
      message.setField(554, password_);
    }
    emit("TO_ADMIN", message.toString());
  }
  void toApp(FIX::Message& message, const FIX::SessionID&) throw(FIX::DoNotSend) override {
    emit("TO_APP", message.toString());
  }
  void fromAdmin(const FIX::Message& message, const FIX::SessionID&) throw(
      FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
      FIX::RejectLogon) override {
    emit("FROM_ADMIN", message.toString());
  }
  void fromApp(const FIX::Message& message, const FIX::SessionID&) throw(
      FIX::FieldNotFound, FIX::IncorrectDataFormat, FIX::IncorrectTagValue,
      FIX::UnsupportedMessageType) override {
    emit("FROM_APP", message.toString());
  }

 private:
  std::string password_;
};

static bool send(Broker& broker, const std::string& fields) {
  FIX::Message message;
  std::stringstream parts(fields);
  std::string part;
  while (std::getline(parts, part, '|')) {
    if (part.empty()) continue;
    auto eq = part.find('=');
    if (eq == std::string::npos) return false;
    int tag = std::stoi(part.substr(0, eq));
    std::string value = part.substr(eq + 1);
    // MsgType and PossResend belong to the header.
    if (tag == 35 || tag == 97) {
      message.getHeader().setField(tag, value);
    } else {
      message.setField(tag, value);
    }
  }
  try {
    return FIX::Session::sendToTarget(message, broker.session);
  } catch (std::exception& e) {
    emit("ERROR", e.what());
    return false;
  }
}

int main(int argc, char** argv) {
  const bool tls = argc == 4 && std::string(argv[3]) == "tls";
  if (argc != 3 && !tls) {
    std::cerr << "usage: initiator CONFIG PASSWORD [tls]" << std::endl;
    return 2;
  }
  try {
    FIX::SessionSettings settings(argv[1]);
    Broker broker(argv[2]);
    FIX::FileStoreFactory store(settings);
    FIX::FileLogFactory log(settings);
    std::unique_ptr<FIX::Initiator> initiator;
    if (tls) {
      initiator.reset(new FIX::SSLSocketInitiator(broker, store, settings, log));
    } else {
      initiator.reset(new FIX::SocketInitiator(broker, store, settings, log));
    }
    initiator->start();
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line == "quit") break;
      if (line == "logout") {
        if (auto* s = FIX::Session::lookupSession(broker.session)) s->logout("done");
        continue;
      }
      if (line.rfind("skip ", 0) == 0) {
        auto* s = FIX::Session::lookupSession(broker.session);
        if (s) s->setNextSenderMsgSeqNum(s->getExpectedSenderNum() + std::stoi(line.substr(5)));
        emit("SKIPPED", line.substr(5));
        continue;
      }
      if (line.rfind("send ", 0) == 0) {
        if (!send(broker, line.substr(5))) emit("ERROR", "not sent: " + line.substr(5));
        continue;
      }
      emit("ERROR", "unknown command: " + line);
    }
    initiator->stop();
  } catch (std::exception& e) {
    std::cerr << "initiator: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
