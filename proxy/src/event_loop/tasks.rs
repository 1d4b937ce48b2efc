//! A loop's tasks: futures in a slab, each with the one waker it is always polled with.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::{wake_task, Job, Remote};

/// Wakes one task of one loop. A wake while the task is already queued does nothing, so a
/// task is polled once however many of its sockets became ready.
struct TaskWaker {
    index: usize,
    queued: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            wake_task(&self.remote, self.index);
        }
    }
}

struct Task {
    job: Job,
    flag: Arc<TaskWaker>,
    waker: Waker,
}

/// The slab. An index is reused once its task ends; a wake meant for the ended task then
/// polls the new one once more than needed, which futures allow.
pub(super) struct Tasks {
    slots: Vec<Option<Task>>,
    free: Vec<usize>,
    remote: Arc<Remote>,
}

impl Tasks {
    pub(super) fn new(remote: Arc<Remote>) -> Tasks {
        Tasks {
            slots: Vec::new(),
            free: Vec::new(),
            remote,
        }
    }

    /// Adds `job`, queued as if woken; returns its index.
    pub(super) fn insert(&mut self, job: Job) -> usize {
        let index = self.free.pop().unwrap_or(self.slots.len());
        let flag = Arc::new(TaskWaker {
            index,
            queued: AtomicBool::new(true),
            remote: self.remote.clone(),
        });
        let task = Task {
            job,
            waker: Waker::from(flag.clone()),
            flag,
        };
        if index == self.slots.len() {
            self.slots.push(Some(task));
        } else {
            self.slots[index] = Some(task);
        }
        index
    }

    /// Polls task `index` if it still exists; drops it when it is done.
    pub(super) fn poll(&mut self, index: usize) {
        let Some(Some(task)) = self.slots.get_mut(index) else {
            return;
        };
        // Before the poll: a wake during it queues the task again.
        task.flag.queued.swap(false, Ordering::AcqRel);
        let mut cx = Context::from_waker(&task.waker);
        // A panicking session ends alone, as a tokio task would, not its worker's others.
        let polled = panic::catch_unwind(AssertUnwindSafe(|| task.job.as_mut().poll(&mut cx)));
        if !matches!(polled, Ok(Poll::Pending)) {
            if polled.is_err() {
                tracing::error!("a task on a worker panicked; it is dropped");
            }
            let task = self.slots[index].take();
            self.free.push(index);
            self.end(task);
        }
    }

    /// Drops an ended task, whose drop may panic too: the loop and its other tasks go on.
    fn end(&self, task: Option<Task>) {
        let Some(task) = task else {
            return;
        };
        if panic::catch_unwind(AssertUnwindSafe(|| drop(task))).is_err() {
            tracing::error!("a task on a worker panicked as it was dropped");
        }
        self.remote.running.ended();
    }

    /// Drops every task.
    pub(super) fn clear(&mut self) {
        // One at a time: a task's drop may wake another, which must find the slab usable.
        for index in 0..self.slots.len() {
            let task = self.slots[index].take();
            self.end(task);
        }
        self.free.clear();
        self.slots.clear();
    }
}
