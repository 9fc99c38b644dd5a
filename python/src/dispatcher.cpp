// Dispatcher: see dispatcher.hpp.
#include "dispatcher.hpp"

namespace nb = nanobind;

namespace pasyn::python {
namespace {

nb::object& batch_hook() {
  static nb::object* hook = new nb::object();  // leaked: outlives interpreter shutdown
  return *hook;
}

}  // namespace

void Dispatcher::set_batch_hook(nb::object hook) { batch_hook() = std::move(hook); }

Dispatcher::Dispatcher(MakeError make_error)
    : make_error_(make_error), thread_([this] { run(); }) {}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::submit(std::uint64_t lane, std::unique_ptr<Pending> pending, nb::object callback) {
  {
    std::lock_guard lk(mu_);
    lanes_[lane].push_back(Item{std::move(pending), std::move(callback)});
    ++queued_;
  }
  cv_.notify_one();
}

void Dispatcher::stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable() && thread_.get_id() == std::this_thread::get_id()) {
    // Called by a callback on the completion thread itself (the last reference to the client
    // dropped there, or close() called there; review18): joining would throw. It ends on its
    // own (stopping_), still using this object: see detached().
    detached_ = true;
    thread_.detach();
    return;
  }
  if (thread_.joinable()) {
    nb::gil_scoped_release release;
    thread_.join();
  }
}

void Dispatcher::take_ready(std::vector<Item>& batch) {
  for (auto it = lanes_.begin(); it != lanes_.end();) {
    auto& lane = it->second;
    while (!lane.empty() && lane.front().pending->wait_for(std::chrono::microseconds(0))) {
      batch.push_back(std::move(lane.front()));
      lane.pop_front();
      --queued_;
    }
    it = lane.empty() ? lanes_.erase(it) : std::next(it);
  }
}

void Dispatcher::run() {
  for (;;) {
    std::vector<Item> batch;
    Pending* front = nullptr;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || queued_ > 0; });
      if (queued_ == 0) return;  // stopping, nothing left
      take_ready(batch);
      // Only this thread removes items, and a deque keeps its elements in place when others
      // append: `front` stays valid without the lock.
      if (batch.empty()) front = lanes_.begin()->second.front().pending.get();
    }
    if (front != nullptr) {
      if (open_->load(std::memory_order_acquire) > 0) {
        front->wait_for(std::chrono::milliseconds(1));  // then look at every lane again
      } else {
        front->wait();  // every lane completes without Python's help
      }
      continue;
    }
    deliver(batch);
  }
}

void Dispatcher::deliver(std::vector<Item>& batch) {
  if (!Py_IsInitialized()) {  // interpreter gone: nobody to tell; the objects are leaked
    for (auto& item : batch) {
      (void)item.callback.release();
      (void)item.pending.release();  // may hold Python objects: not to be touched now
    }
    return;
  }
  nb::gil_scoped_acquire gil;
  const nb::object hook = batch_hook();
  nb::list outcomes;
  for (auto& item : batch) {
    nb::object value = nb::none(), error = nb::none();
    try {
      value = item.pending->take();
    } catch (nb::python_error& e) {
      error = nb::borrow(e.value());
    } catch (...) {
      error = make_error_(std::current_exception());
    }
    if (hook.is_valid() && !hook.is_none()) {
      outcomes.append(nb::make_tuple(item.callback, value, error));
    } else {
      try {
        item.callback(value, error);
      } catch (nb::python_error& e) {
        e.discard_as_unraisable("pasyn_sqlite.aio completion");
      }
    }
    item.callback.reset();
    item.pending.reset();
  }
  if (nb::len(outcomes) == 0) return;
  try {
    hook(outcomes);
  } catch (nb::python_error& e) {
    e.discard_as_unraisable("pasyn_sqlite.aio completion");
  }
}

}  // namespace pasyn::python
