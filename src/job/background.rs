//! A job's host work — decoding the next batch, colouring and encoding the last one — on one
//! thread below the network's priority, so that it runs in the gaps the network leaves and
//! not in its way.
//!
//! Why a thread of its own: the CPU engine keeps both cores busy only ~75–80% of a pass (its
//! small ops and the joins between parallel ones leave a core idle for short spells), and the
//! GPU engine leaves the host idle while the device works. Work given to rayon's pool in those
//! spells (a read-ahead tried in b6bc6f3's branch) runs over into the network's next parallel
//! op and delays it: it cost 0–16%. This thread instead asks the kernel to run it only when a
//! core would otherwise idle (`SCHED_IDLE` on Linux; nice 19 where that is refused; the
//! normal priority elsewhere), and any `par_iter` inside its tasks stays on it (a rayon pool of
//! one thread).
//!
//! Such a thread can starve on a machine that other programs keep busy. So nothing waits on
//! it blindly: [`Background::wait_all`] takes back every task the thread has not started and
//! runs them on the caller's side in parallel, and waits only for the few it is running (each
//! one image's worth of work). A task that panics re-raises its panic in the caller.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rayon::prelude::*;

type Task<T> = Box<dyn FnOnce() -> T + Send + 'static>;

enum State<T> {
    Pending(Task<T>),
    Running,
    Done(T),
    Panicked(Box<dyn Any + Send>),
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    done: Condvar,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // the lock is never held while a task runs, so it cannot be poisoned by one
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// On the background thread: run the task unless the caller took it back.
    fn run(&self) {
        let task = {
            let mut s = self.lock();
            match std::mem::replace(&mut *s, State::Running) {
                State::Pending(f) => f,
                other => {
                    *s = other;
                    return;
                }
            }
        };
        let out = match panic::catch_unwind(AssertUnwindSafe(task)) {
            Ok(v) => State::Done(v),
            Err(p) => State::Panicked(p),
        };
        *self.lock() = out;
        self.done.notify_all();
    }
}

/// The result of a task given to [`Background::spawn`].
pub(crate) struct Ticket<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Ticket<T> {
    /// The task itself if the background thread has not started it.
    fn take_back(&self) -> Option<Task<T>> {
        let mut s = self.slot.lock();
        match std::mem::replace(&mut *s, State::Taken) {
            State::Pending(f) => Some(f),
            other => {
                *s = other;
                None
            }
        }
    }

    /// The task's result, once the background thread has finished it.
    fn wait(self) -> T {
        let mut s = self.slot.lock();
        loop {
            match std::mem::replace(&mut *s, State::Taken) {
                State::Done(v) => return v,
                State::Panicked(p) => panic::resume_unwind(p),
                State::Running => {
                    *s = State::Running;
                    s = self.slot.done.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                State::Pending(_) | State::Taken => unreachable!("taken back before waiting"),
            }
        }
    }
}

/// One low-priority thread for a job's host work (see the module's doc). Without it (the
/// thread could not be started), tasks run when their results are asked for.
pub(crate) struct Background {
    pool: Option<rayon::ThreadPool>,
}

impl Background {
    pub fn new() -> Self {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(|_| "deepviz-host".into()).start_handler(|_| lower_priority()).build().ok();
        Background { pool }
    }

    /// Run `f` on the background thread when a core is free.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Ticket<T> {
        let slot = Arc::new(Slot { state: Mutex::new(State::Pending(Box::new(f))), done: Condvar::new() });
        if let Some(pool) = &self.pool {
            let s = slot.clone();
            pool.spawn(move || s.run());
        }
        Ticket { slot }
    }

    /// The results of `tickets`, in order: the tasks the background thread has not started
    /// are taken back and run here in parallel (rayon's pool), the others waited for.
    pub fn wait_all<T: Send + 'static>(tickets: Vec<Ticket<T>>) -> Vec<T> {
        let taken: Vec<Option<Task<T>>> = tickets.iter().map(Ticket::take_back).collect();
        let mut ran: Vec<Option<T>> = taken.into_par_iter().map(|f| f.map(|f| f())).collect();
        tickets.into_iter().zip(ran.iter_mut()).map(|(t, r)| r.take().unwrap_or_else(|| t.wait())).collect()
    }
}

/// The calling thread below every normal one: `SCHED_IDLE`, else nice 19 (Linux; elsewhere
/// the thread keeps the normal priority: there the call would lower the whole process's).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread (pid / who 0) with a valid parameter block
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_in_order_whoever_runs_them() {
        let bg = Background::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let tickets: Vec<_> = (0..64)
            .map(|i| {
                let ran = ran.clone();
                bg.spawn(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                    i * i
                })
            })
            .collect();
        assert_eq!(Background::wait_all(tickets), (0..64).map(|i| i * i).collect::<Vec<_>>());
        // every task ran exactly once: taken back or run by the thread, never both
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(ran.load(Ordering::SeqCst), 64);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_thread_is_below_normal_priority() {
        let bg = Background::new();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let t = bg.spawn(move || {
            s.store(1, Ordering::SeqCst);
            // SAFETY: queries of the calling thread
            unsafe { (libc::sched_getscheduler(0), libc::getpriority(libc::PRIO_PROCESS, 0)) }
        });
        // it runs only when a core is idle: wait for that (a loaded machine can take a while)
        let t0 = std::time::Instant::now();
        while started.load(Ordering::SeqCst) == 0 && t0.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let (policy, nice) = Background::wait_all(vec![t])[0];
        assert!(policy == libc::SCHED_IDLE || nice == 19, "policy {policy}, nice {nice}");
    }

    #[test]
    fn without_a_thread_the_caller_runs_them() {
        let bg = Background { pool: None };
        let t = vec![bg.spawn(|| 1), bg.spawn(|| 2)];
        assert_eq!(Background::wait_all(t), vec![1, 2]);
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let bg = Background::new();
        let t = bg.spawn(|| -> u32 { panic!("boom") });
        // let the thread start it, so the panic is caught there and re-raised here
        std::thread::sleep(std::time::Duration::from_millis(50));
        let r = panic::catch_unwind(AssertUnwindSafe(|| Background::wait_all(vec![t])));
        let msg = r.expect_err("re-raised");
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom"));
    }
}
