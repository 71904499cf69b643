//! gipc's README example, in greenhub: a coroutine in the parent writes to a pipe, a child
//! process (with its own fresh hub) reads from it, and answers on a second pipe.
//!
//! It teaches the transfer rule: the read end is *moved* into `start_process`, so it is closed
//! in the parent once the child exists and is the only pipe handle open in the child.
//!
//! Run: `cargo run --release -p examples --example parent_child`
//!
//! Expected output (`{pid}` stands for the child's pid, which varies):
//! ```text
//! parent: started Process-1 (pid {pid})
//! child: got 0 from the parent
//! parent: the child answered "0 squared is 0"
//! parent: Process-1 exited with exit status: 0
//! ```

use greenhub_ipc::{pipe, start_process};

fn main() -> Result<(), greenhub_ipc::Error> {
    greenhub::run(|| {
        let (from_parent, to_child) = pipe::<u64>()?;
        let (from_child, to_parent) = pipe::<String>()?;

        // The 'writer' coroutine, in the parent.
        let writer = greenhub::spawn(move || to_child.put(&0));

        // The 'reader' child process: it gets the handles it was given, and nothing else.
        let child = start_process((from_parent, to_parent), |(from_parent, to_parent)| {
            let n = from_parent.get()?;
            println!("child: got {n} from the parent");
            to_parent.put(&format!("{n} squared is {}", n * n))
        })?;
        println!("parent: started {} (pid {})", child.name(), child.pid());

        writer.join().expect("the writer coroutine ends")?;
        println!("parent: the child answered {:?}", from_child.get()?);
        let status = child.join()?;
        println!("parent: {} exited with {status}", child.name());
        Ok(())
    })
}
