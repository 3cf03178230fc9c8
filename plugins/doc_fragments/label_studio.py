# Copyright: ailab maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    # The connection options every Label Studio module takes (module_utils.label_studio.CONNECTION_ARGSPEC).
    DOCUMENTATION = r"""
options:
  url:
    description: Base URL of Label Studio, with scheme, for example C(http://labelstudio.lab.local).
    type: str
    required: true
  token:
    description: "API token of a Label Studio user, sent as C(Authorization: Token <token>)."
    type: str
    required: true
  validate_certs:
    description: Verify the TLS certificate of O(url).
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each HTTP answer.
    type: int
    default: 60
"""
