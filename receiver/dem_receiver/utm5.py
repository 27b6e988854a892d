"""NetUP UTM5 through utm5_payment_tool; the lookup is a configurable command."""
import subprocess

from .ledger import BillingFailed


class UTM5:
    """Pays with utm5_payment_tool and finds payments by payment_ext_number."""

    def __init__(self, tool, method, lookup, extra_args=(), timeout=60):
        # lookup: argv with "{external_id}"; prints the payment id, or nothing if absent.
        self.tool, self.method, self.lookup_argv = tool, str(method), list(lookup)
        self.extra_args, self.timeout = list(extra_args), timeout

    def _run(self, argv):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BillingFailed(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            raise BillingFailed(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout.strip()

    def lookup(self, external_id):
        """The payment id UTM5 holds for external_id, or None."""
        argv = [arg.replace("{external_id}", external_id) for arg in self.lookup_argv]
        return self._run(argv) or None

    def pay(self, account, amount, external_id, comment):
        """Insert one payment (negative for a reversal) and return its id."""
        found = self.lookup(external_id)
        if found:
            return found
        self._run([self.tool, "-a", account, "-b", amount, "-e", external_id,
                   "-m", self.method, "-L", comment, *self.extra_args])
        found = self.lookup(external_id)
        if not found:
            raise BillingFailed(f"{external_id}: paid but not found by the lookup")
        return found
