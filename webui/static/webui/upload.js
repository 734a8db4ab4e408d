/* The upload page: choose or drop files and folders, hash them, declare the version,
 * send each file in resumable chunks, finalize, and go to the version page.
 *
 * Protocol (docs: API.md, "Versions"):
 *   POST {versions}              {description, metrics, params, tags, lineage, files}
 *   PUT  {file url}              Content-Range: bytes START-END/TOTAL, 8 MiB at a time
 *   HEAD {file url}              Upload-Offset: bytes stored so far (resume point)
 *   POST {version}/finalize/     once every file is complete
 *
 * Unfinished uploads are remembered in localStorage, so a reloaded page can continue
 * once the person chooses the same files again.
 */
(function () {
  "use strict";

  var CHUNK = 8 * 1024 * 1024;
  var HASH_SLICE = 4 * 1024 * 1024;
  var MAX_TRIES = 8;
  var BACKOFF_MAX_MS = 30000;
  var STORAGE_PREFIX = "modelgate.upload.";

  // --- SHA-256, incremental (FIPS 180-4) ----------------------------------------------
  // crypto.subtle.digest needs the whole input at once; this keeps memory flat for files
  // of any size by hashing one slice at a time.

  var K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
  ]);

  function Sha256() {
    this.h = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
      0x5be0cd19,
    ]);
    this.w = new Uint32Array(64);
    this.block = new Uint8Array(64);
    this.blockLength = 0;
    this.length = 0; // bytes so far; exact as a double up to 8 PiB
    this.result = null;
  }

  Sha256.prototype._compress = function (bytes, offset) {
    var w = this.w;
    var h = this.h;
    var i, j, x, y;
    for (i = 0; i < 16; i++) {
      j = offset + i * 4;
      w[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
    }
    for (i = 16; i < 64; i++) {
      x = w[i - 15];
      y = w[i - 2];
      w[i] =
        (w[i - 16] +
          (((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)) +
          w[i - 7] +
          (((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10))) |
        0;
    }
    var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    var t1, t2;
    for (i = 0; i < 64; i++) {
      t1 =
        (k +
          (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
          ((e & f) ^ (~e & g)) +
          K[i] +
          w[i]) |
        0;
      t2 =
        ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
          ((a & b) ^ (a & c) ^ (b & c))) |
        0;
      k = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
  };

  Sha256.prototype.update = function (data) {
    if (this.result !== null) throw new Error("SHA-256 already finalized");
    var n = data.length;
    var pos = 0;
    this.length += n;
    if (this.blockLength > 0) {
      var take = Math.min(64 - this.blockLength, n);
      this.block.set(data.subarray(0, take), this.blockLength);
      this.blockLength += take;
      pos = take;
      if (this.blockLength < 64) return this;
      this._compress(this.block, 0);
      this.blockLength = 0;
    }
    for (; pos + 64 <= n; pos += 64) this._compress(data, pos);
    if (pos < n) {
      this.block.set(data.subarray(pos), 0);
      this.blockLength = n - pos;
    }
    return this;
  };

  Sha256.prototype.hex = function () {
    if (this.result !== null) return this.result;
    var bits = this.length * 8;
    var hi = Math.floor(bits / 0x100000000);
    var lo = bits >>> 0;
    var pad = new Uint8Array(this.blockLength < 56 ? 64 - this.blockLength : 128 - this.blockLength);
    var end = pad.length;
    pad[0] = 0x80;
    pad[end - 8] = hi >>> 24;
    pad[end - 7] = (hi >>> 16) & 0xff;
    pad[end - 6] = (hi >>> 8) & 0xff;
    pad[end - 5] = hi & 0xff;
    pad[end - 4] = lo >>> 24;
    pad[end - 3] = (lo >>> 16) & 0xff;
    pad[end - 2] = (lo >>> 8) & 0xff;
    pad[end - 1] = lo & 0xff;
    this.update(pad);
    var out = "";
    for (var i = 0; i < 8; i++) out += ("00000000" + this.h[i].toString(16)).slice(-8);
    this.result = out;
    return out;
  };

  // Exposed for the tests that check it against Python's hashlib.
  window.ModelgateSha256 = Sha256;

  function hashFile(file, onProgress) {
    var hasher = new Sha256();
    var offset = 0;
    function next() {
      if (offset >= file.size) return Promise.resolve(hasher.hex());
      var end = Math.min(offset + HASH_SLICE, file.size);
      return file
        .slice(offset, end)
        .arrayBuffer()
        .then(function (buffer) {
          hasher.update(new Uint8Array(buffer));
          offset = end;
          onProgress(offset);
          return next();
        });
    }
    return next();
  }

  // --- small helpers ----------------------------------------------------------------

  var app = document.getElementById("upload-app");
  if (!app) return;
  var model = app.getAttribute("data-model");
  var versionsUrl = app.getAttribute("data-api-versions");
  var versionPagePrefix = app.getAttribute("data-version-page-prefix");
  var storageKey = STORAGE_PREFIX + model;

  function $(selector, root) {
    return (root || document).querySelector(selector);
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function sleep(ms) {
    return new Promise(function (resolve) {
      window.setTimeout(resolve, ms);
    });
  }

  function formatBytes(n) {
    if (n < 1024) return n + " bytes";
    var units = ["KB", "MB", "GB", "TB"];
    var value = n;
    var unit = -1;
    do {
      value /= 1024;
      unit += 1;
    } while (value >= 1024 && unit < units.length - 1);
    return value.toFixed(1) + " " + units[unit];
  }

  function formatDuration(seconds) {
    if (!isFinite(seconds)) return "";
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + (seconds % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function csrfToken() {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function fileUrl(version, path) {
    return (
      versionsUrl + version + "/files/" + path.split("/").map(encodeURIComponent).join("/")
    );
  }

  function UploadError(message, status, error) {
    this.message = message;
    this.status = status || 0;
    this.error = error || null;
  }

  function describe(status, error, path) {
    var message = error && error.message;
    if (error && error.code === "checksum_mismatch") {
      return "The file changed or was corrupted on the way: " + path + (message ? " — " + message : "");
    }
    if (status === 413) return message || "A file is larger than the server accepts.";
    if (status === 403) return message || "You may not upload versions of this model.";
    if (status === 401) return "Your session has ended. Sign in again, then resume the upload.";
    if (status === 0) return "The server cannot be reached.";
    return message || "The server answered HTTP " + status + ".";
  }

  function api(method, url, body) {
    var headers = { Accept: "application/json", "X-CSRFToken": csrfToken() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(
      function (response) {
        return response
          .json()
          .catch(function () {
            return null;
          })
          .then(function (data) {
            if (!response.ok) {
              var error = data && data.error;
              throw new UploadError(describe(response.status, error), response.status, error);
            }
            return data;
          });
      },
      function () {
        throw new UploadError("The server cannot be reached. Check the connection and try again.");
      }
    );
  }

  // --- messages -----------------------------------------------------------------------

  var alertBox = $("#upload-error");

  function showError(message) {
    alertBox.textContent = message;
    alertBox.hidden = false;
    alertBox.scrollIntoView({ block: "nearest" });
  }

  function clearError() {
    alertBox.textContent = "";
    alertBox.hidden = true;
  }

  // --- remembering an unfinished upload -------------------------------------------------

  function loadPending() {
    try {
      var record = JSON.parse(window.localStorage.getItem(storageKey) || "null");
      return record && record.model === model && record.version ? record : null;
    } catch (e) {
      return null;
    }
  }

  function savePending(version, items) {
    try {
      window.localStorage.setItem(
        storageKey,
        JSON.stringify({
          model: model,
          version: version,
          savedAt: new Date().toISOString(),
          files: items.map(function (item) {
            return {
              path: item.path,
              size: item.size,
              sha256: item.sha256,
              lastModified: item.file.lastModified,
            };
          }),
        })
      );
    } catch (e) {
      /* storage full or disabled: the upload still works, it just cannot resume */
    }
  }

  function forgetPending() {
    try {
      window.localStorage.removeItem(storageKey);
    } catch (e) {
      /* nothing to forget */
    }
  }

  // --- choosing files -------------------------------------------------------------------

  // path -> {file, path}; a later choice of the same path replaces the earlier one.
  var chosen = new Map();
  var fileInput = $("#files-input");
  var folderInput = $("#folder-input");
  var dropzone = $("#dropzone");
  var listBody = $("#file-list tbody");

  function stripTop(relativePath) {
    var slash = relativePath.indexOf("/");
    return slash === -1 ? relativePath : relativePath.slice(slash + 1);
  }

  // Paths as the version will hold them: the folder's own name is not part of them.
  function fromInput(input) {
    return Array.prototype.map.call(input.files, function (file) {
      var relative = file.webkitRelativePath || "";
      return { file: file, path: relative ? stripTop(relative) : file.name };
    });
  }

  function readEntries(reader) {
    return new Promise(function (resolve, reject) {
      var all = [];
      (function more() {
        reader.readEntries(function (batch) {
          if (!batch.length) return resolve(all);
          all = all.concat(Array.prototype.slice.call(batch));
          more();
        }, reject);
      })();
    });
  }

  function walk(entry, prefix, out) {
    if (entry.isFile) {
      return new Promise(function (resolve, reject) {
        entry.file(resolve, reject);
      }).then(function (file) {
        out.push({ file: file, path: prefix + entry.name });
      });
    }
    if (!entry.isDirectory) return Promise.resolve();
    return readEntries(entry.createReader()).then(function (children) {
      return children.reduce(function (chain, child) {
        return chain.then(function () {
          return walk(child, prefix + entry.name + "/", out);
        });
      }, Promise.resolve());
    });
  }

  function fromDrop(dataTransfer) {
    var entries = [];
    var loose = [];
    // Entries must be taken synchronously, before the drop event returns.
    Array.prototype.forEach.call(dataTransfer.items || [], function (item) {
      if (item.kind !== "file") return;
      var entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
      else if (item.getAsFile()) loose.push(item.getAsFile());
    });
    if (!entries.length && !loose.length && dataTransfer.files) {
      loose = Array.prototype.slice.call(dataTransfer.files);
    }
    var out = loose.map(function (file) {
      return { file: file, path: file.name };
    });
    // One folder dropped on its own: like choosing a folder, its name is not in the paths.
    if (entries.length === 1 && entries[0].isDirectory && !loose.length) {
      return readEntries(entries[0].createReader()).then(function (children) {
        return children
          .reduce(function (chain, child) {
            return chain.then(function () {
              return walk(child, "", out);
            });
          }, Promise.resolve())
          .then(function () {
            return out;
          });
      });
    }
    return entries
      .reduce(function (chain, entry) {
        return chain.then(function () {
          return walk(entry, "", out);
        });
      }, Promise.resolve())
      .then(function () {
        return out;
      });
  }

  function addChosen(items) {
    items.forEach(function (item) {
      chosen.set(item.path, item);
    });
    renderChosen();
  }

  function renderChosen() {
    listBody.textContent = "";
    var total = 0;
    var paths = Array.from(chosen.keys()).sort();
    paths.forEach(function (path) {
      var item = chosen.get(path);
      total += item.file.size;
      var remove = el("button", {
        type: "button",
        className: "link",
        "aria-label": "Remove " + path,
        text: "Remove",
      });
      remove.addEventListener("click", function () {
        chosen.delete(path);
        renderChosen();
      });
      listBody.appendChild(
        el("tr", {}, [
          el("td", { className: "mono", text: path }),
          el("td", { className: "num", text: formatBytes(item.file.size) }),
          el("td", {}, [remove]),
        ])
      );
    });
    $("#file-list").hidden = paths.length === 0;
    $("#file-summary").textContent = paths.length
      ? paths.length + " file" + (paths.length === 1 ? "" : "s") + ", " + formatBytes(total)
      : "";
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-pick]"), function (button) {
    button.addEventListener("click", function () {
      document.getElementById(button.getAttribute("data-pick")).click();
    });
  });

  fileInput.addEventListener("change", function () {
    addChosen(fromInput(fileInput));
    fileInput.value = "";
  });
  folderInput.addEventListener("change", function () {
    addChosen(fromInput(folderInput));
    folderInput.value = "";
  });
  $("#clear-files").addEventListener("click", function () {
    chosen.clear();
    renderChosen();
  });

  // Dropping anywhere else must not navigate away to the dropped file.
  ["dragover", "drop"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      event.preventDefault();
    });
  });
  dropzone.addEventListener("dragenter", function () {
    dropzone.classList.add("wf-dragover");
  });
  dropzone.addEventListener("dragover", function (event) {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropzone.classList.add("wf-dragover");
  });
  dropzone.addEventListener("dragleave", function (event) {
    if (!dropzone.contains(event.relatedTarget)) dropzone.classList.remove("wf-dragover");
  });
  dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    dropzone.classList.remove("wf-dragover");
    fromDrop(event.dataTransfer).then(addChosen, function () {
      showError("Some of the dropped files could not be read.");
    });
  });
  dropzone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      fileInput.click();
    }
  });

  // --- key/value rows and JSON ----------------------------------------------------------

  function addRow(list, key, value) {
    var keyLabel = list.getAttribute("data-key-label");
    var valueLabel = list.getAttribute("data-value-label");
    var keyInput = el("input", { type: "text", "aria-label": keyLabel, placeholder: "name" });
    var valueInput = el("input", {
      type: "text",
      "aria-label": valueLabel,
      placeholder: list.getAttribute("data-value-placeholder") || "value",
    });
    if (list.getAttribute("data-kind") === "metrics") valueInput.setAttribute("inputmode", "decimal");
    keyInput.value = key || "";
    valueInput.value = value === undefined || value === null ? "" : String(value);
    var remove = el("button", {
      type: "button",
      className: "btn btn-small",
      "aria-label": "Remove this " + (list.getAttribute("data-row-noun") || "row"),
      text: "Remove",
    });
    var row = el("div", { className: "wf-kv-row" }, [keyInput, valueInput, remove]);
    remove.addEventListener("click", function () {
      row.remove();
      if (!list.querySelector(".wf-kv-row")) addRow(list);
    });
    list.appendChild(row);
    return row;
  }

  function rowsOf(list) {
    return Array.prototype.map.call(list.querySelectorAll(".wf-kv-row"), function (row) {
      var inputs = row.querySelectorAll("input");
      return { key: inputs[0].value.trim(), value: inputs[1].value.trim(), row: row };
    });
  }

  function setRows(list, mapping) {
    var existing = rowsOf(list);
    Object.keys(mapping).forEach(function (key) {
      var found = existing.filter(function (r) {
        return r.key === key;
      })[0];
      var empty = existing.filter(function (r) {
        return !r.key && !r.value;
      })[0];
      var row = found ? found.row : empty ? empty.row : addRow(list);
      if (empty && row === empty.row) existing.splice(existing.indexOf(empty), 1);
      var inputs = row.querySelectorAll("input");
      inputs[0].value = key;
      inputs[1].value = String(mapping[key]);
    });
  }

  function collect(list, what, numeric) {
    var result = {};
    rowsOf(list).forEach(function (r) {
      if (!r.key && !r.value) return;
      if (!r.key) throw new UploadError(what + " value '" + r.value + "' has no name.");
      if (Object.prototype.hasOwnProperty.call(result, r.key)) {
        throw new UploadError(what + " '" + r.key + "' is listed twice.");
      }
      if (numeric) {
        var number = Number(r.value);
        if (r.value === "" || !isFinite(number)) {
          throw new UploadError(what + " '" + r.key + "' must be a number, not '" + r.value + "'.");
        }
        result[r.key] = number;
      } else {
        result[r.key] = r.value;
      }
    });
    return result;
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-kv-list]"), function (list) {
    addRow(list);
    var box = list.closest("[data-kv]");
    $("[data-add-row]", box).addEventListener("click", function () {
      addRow(list).querySelector("input").focus();
    });
    var jsonText = $("[data-json-text]", box);
    var jsonFile = $("[data-json-file]", box);
    var jsonError = $("[data-json-error]", box);
    if (!jsonText) return;
    var numeric = list.getAttribute("data-kind") === "metrics";
    function useJson() {
      jsonError.hidden = true;
      var data;
      try {
        data = JSON.parse(jsonText.value);
      } catch (e) {
        jsonError.textContent = "That is not valid JSON: " + e.message;
        jsonError.hidden = false;
        return;
      }
      if (!data || typeof data !== "object" || Array.isArray(data)) {
        jsonError.textContent = 'Expected a JSON object such as {"accuracy": 0.91}.';
        jsonError.hidden = false;
        return;
      }
      var bad = Object.keys(data).filter(function (key) {
        var value = data[key];
        return numeric
          ? typeof value !== "number" || !isFinite(value)
          : value !== null && typeof value === "object";
      });
      if (bad.length) {
        jsonError.textContent =
          (numeric ? "Metrics must be numbers: " : "Values must be plain text or numbers: ") +
          bad.join(", ");
        jsonError.hidden = false;
        return;
      }
      setRows(list, data);
      jsonText.value = "";
    }
    $("[data-json-apply]", box).addEventListener("click", useJson);
    jsonFile.addEventListener("change", function () {
      var file = jsonFile.files[0];
      if (!file) return;
      file.text().then(function (text) {
        jsonText.value = text;
        jsonFile.value = "";
        useJson();
      });
    });
  });

  function metadata() {
    var lineage = {};
    [
      ["code_commit", "#lineage-commit"],
      ["dataset", "#lineage-dataset"],
      ["run_url", "#lineage-run"],
    ].forEach(function (pair) {
      var value = $(pair[1]).value.trim();
      if (value) lineage[pair[0]] = value;
    });
    return {
      description: $("#description").value,
      metrics: collect($("#metrics-rows"), "Metric", true),
      params: collect($("#params-rows"), "Parameter", false),
      tags: collect($("#tags-rows"), "Tag", false),
      lineage: lineage,
    };
  }

  // --- progress display -----------------------------------------------------------------

  var progressCard = $("#progress");
  var progressBody = $("#progress tbody");
  var overallBar = $("#overall-bar");
  var overallText = $("#overall-text");
  var statusLine = $("#progress-status");

  function setBar(bar, fraction) {
    var percent = Math.max(0, Math.min(100, fraction * 100));
    bar.style.width = percent.toFixed(1) + "%";
    bar.parentNode.setAttribute("aria-valuenow", String(Math.floor(percent)));
  }

  function FileRow(item) {
    this.item = item;
    this.bar = el("div", { className: "progress-bar" });
    var track = el(
      "div",
      {
        className: "progress",
        role: "progressbar",
        "aria-valuemin": "0",
        "aria-valuemax": "100",
        "aria-valuenow": "0",
        "aria-label": item.path,
      },
      [this.bar]
    );
    this.percent = el("td", { className: "num mono", text: "0%" });
    this.detail = el("td", { className: "muted wf-detail", text: "waiting" });
    this.row = el("tr", { "data-path": item.path }, [
      el("td", { className: "mono", text: item.path }),
      el("td", { className: "num", text: formatBytes(item.size) }),
      el("td", { className: "wf-bar-cell" }, [track]),
      this.percent,
      this.detail,
    ]);
    this.sent = 0;
    this.samples = [];
    progressBody.appendChild(this.row);
  }

  FileRow.prototype.show = function (fraction, text) {
    setBar(this.bar, fraction);
    this.percent.textContent = Math.floor(fraction * 100) + "%";
    this.detail.textContent = text;
  };

  FileRow.prototype.hashing = function (bytes) {
    var size = this.item.size || 1;
    this.show(bytes / size, "computing sha256…");
  };

  FileRow.prototype.progress = function (sent) {
    var now = performance.now();
    this.sent = sent;
    this.samples.push([now, sent]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
    var first = this.samples[0];
    var seconds = (now - first[0]) / 1000;
    var speed = seconds > 0.2 ? (sent - first[1]) / seconds : 0;
    var text = "uploading";
    if (speed > 0) {
      text =
        (speed / (1024 * 1024)).toFixed(1) +
        " MB/s · " +
        formatDuration((this.item.size - sent) / speed) +
        " left";
    }
    this.show(this.item.size ? sent / this.item.size : 1, text);
    overall.update();
  };

  FileRow.prototype.retrying = function (ms, tries) {
    this.samples = [];
    this.detail.textContent =
      "connection lost; retrying in " + Math.round(ms / 1000) + " s (try " + tries + " of " + MAX_TRIES + ")";
  };

  FileRow.prototype.done = function () {
    this.sent = this.item.size;
    this.show(1, "done");
    this.row.classList.add("wf-done");
    overall.update();
  };

  var overall = {
    rows: [],
    update: function () {
      var total = 0;
      var sent = 0;
      this.rows.forEach(function (row) {
        total += row.item.size;
        sent += row.sent;
      });
      setBar(overallBar, total ? sent / total : 1);
      overallText.textContent = formatBytes(sent) + " of " + formatBytes(total);
    },
  };

  function startProgress(items, title) {
    progressBody.textContent = "";
    overall.rows = items.map(function (item) {
      var row = new FileRow(item);
      item.ui = row;
      return row;
    });
    $("#progress-title").textContent = title;
    progressCard.hidden = false;
    overall.update();
  }

  function status(text) {
    statusLine.textContent = text;
  }

  // --- sending ----------------------------------------------------------------------------

  function putChunk(item, start, end, onProgress) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", item.url);
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      if (item.size > 0) {
        xhr.setRequestHeader("Content-Range", "bytes " + start + "-" + (end - 1) + "/" + item.size);
      }
      xhr.upload.onprogress = function (event) {
        onProgress(start + event.loaded);
      };
      xhr.onload = function () {
        var body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch (e) {
          body = null;
        }
        resolve({ status: xhr.status, body: body });
      };
      xhr.onerror = xhr.onabort = xhr.ontimeout = function () {
        resolve({ status: 0, body: null });
      };
      xhr.send(item.file.slice(start, end));
    });
  }

  function headOffset(item) {
    return fetch(item.url, { method: "HEAD", credentials: "same-origin", cache: "no-store" }).then(
      function (response) {
        if (!response.ok) {
          if (response.status >= 500) return null;
          throw new UploadError(describe(response.status, null, item.path), response.status);
        }
        return {
          offset: parseInt(response.headers.get("Upload-Offset") || "0", 10) || 0,
          complete: response.headers.get("Upload-Complete") === "true",
        };
      },
      function () {
        return null; // still offline: the next try asks again
      }
    );
  }

  function retryable(status) {
    return status === 0 || status === 408 || status === 429 || status >= 500;
  }

  // Send one file from item.offset to its end, resuming after breaks and server errors.
  function sendFile(item) {
    var ui = item.ui;
    var offset = item.offset || 0;
    var tries = 0;

    function again(status, error) {
      tries += 1;
      if (tries > MAX_TRIES) {
        return Promise.reject(
          new UploadError(
            "The upload of " + item.path + " keeps failing (" + describe(status, error, item.path) +
              "). It stopped after " + MAX_TRIES + " tries; use Retry to continue where it stopped.",
            status,
            error
          )
        );
      }
      var wait = Math.min(BACKOFF_MAX_MS, 1000 * Math.pow(2, tries - 1));
      ui.retrying(wait, tries);
      return sleep(wait)
        .then(function () {
          return headOffset(item);
        })
        .then(function (state) {
          if (state) {
            offset = state.offset;
            if (state.complete) offset = item.size;
          }
          return step(state && state.complete);
        });
    }

    function step(complete) {
      if (complete || (offset >= item.size && item.size > 0)) {
        ui.done();
        return Promise.resolve();
      }
      var end = Math.min(offset + CHUNK, item.size);
      ui.progress(offset);
      return putChunk(item, offset, end, function (sent) {
        ui.progress(sent);
      }).then(function (result) {
        var body = result.body || {};
        var error = body.error;
        if (result.status >= 200 && result.status < 300) {
          tries = 0;
          offset = typeof body.received === "number" ? body.received : end;
          return step(body.complete === true);
        }
        if (result.status === 409 && error && error.details && typeof error.details.received === "number") {
          offset = error.details.received; // the server has a different resume point
          tries += 1;
          if (tries > MAX_TRIES) {
            return Promise.reject(new UploadError(describe(409, error, item.path), 409, error));
          }
          return step(false);
        }
        if (result.status === 409) {
          return headOffset(item).then(function (state) {
            if (state && state.complete) return step(true);
            throw new UploadError(describe(409, error, item.path), 409, error);
          });
        }
        if (retryable(result.status)) return again(result.status, error);
        throw new UploadError(describe(result.status, error, item.path), result.status, error);
      });
    }

    return step(false);
  }

  function finalize(version) {
    var url = versionsUrl + version + "/finalize/";
    var tries = 0;
    function attempt() {
      return api("POST", url).catch(function (err) {
        if (err.status === 409 && err.error && err.error.details && err.error.details.state) {
          return null; // finalized already, by an earlier attempt whose answer was lost
        }
        tries += 1;
        if (retryable(err.status) && tries < MAX_TRIES) {
          return sleep(1000 * Math.pow(2, tries - 1)).then(attempt);
        }
        throw err;
      });
    }
    return attempt();
  }

  function sendAll(version, items) {
    var index = 0;
    function next() {
      if (index >= items.length) return Promise.resolve();
      var item = items[index];
      index += 1;
      status("Uploading " + index + " of " + items.length + ": " + item.path);
      return sendFile(item).then(next);
    }
    return next()
      .then(function () {
        status("Finalizing version " + version + "…");
        return finalize(version);
      })
      .then(function () {
        forgetPending();
        status("Version " + version + " is uploaded. Opening its page…");
        window.location.assign(versionPagePrefix + version + "/");
      });
  }

  // --- the main flow ----------------------------------------------------------------------

  var form = $("#upload-form");
  var busy = false;
  var lastFailed = null; // {version, items} to retry without choosing the files again

  function setBusy(value) {
    busy = value;
    Array.prototype.forEach.call(
      document.querySelectorAll("#upload-form input, #upload-form button, #upload-form textarea, #resume input, #resume button"),
      function (node) {
        if (value) {
          node.setAttribute("data-was-disabled", node.disabled ? "1" : "");
          node.disabled = true;
        } else {
          node.disabled = node.getAttribute("data-was-disabled") === "1";
        }
      }
    );
    if (value) {
      $("#retry-button").hidden = true;
      $("#start-over").hidden = true;
      form.hidden = true;
      progressCard.hidden = false;
      progressCard.scrollIntoView({ block: "start" });
    }
  }

  function failed(err, version, items) {
    setBusy(false);
    var message = err instanceof UploadError ? err.message : "Something went wrong: " + err;
    showError(message);
    status("Stopped.");
    if (version && items) {
      // The version exists and keeps what arrived: continuing beats starting over.
      lastFailed = { version: version, items: items };
      $("#retry-button").hidden = false;
      $("#start-over").hidden = false;
    } else {
      form.hidden = false; // nothing was created: fix the choice and press Upload again
    }
  }

  function hashAll(items) {
    var index = 0;
    function next() {
      if (index >= items.length) return Promise.resolve();
      var item = items[index];
      index += 1;
      status("Computing checksums: " + index + " of " + items.length + " (" + item.path + ")");
      return hashFile(item.file, function (bytes) {
        item.ui.hashing(bytes);
      }).then(
        function (digest) {
          item.sha256 = digest;
          item.ui.show(0, "checksum ready");
          return next();
        },
        function () {
          throw new UploadError(
            "Could not read " + item.path + ": it changed or was moved while it was being read."
          );
        }
      );
    }
    return next();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) return;
    clearError();
    var meta;
    try {
      meta = metadata();
    } catch (err) {
      showError(err.message);
      return;
    }
    if (!chosen.size) {
      showError("Choose at least one file or a folder to upload.");
      return;
    }
    var items = Array.from(chosen.keys())
      .sort()
      .map(function (path) {
        var picked = chosen.get(path);
        return { file: picked.file, path: path, size: picked.file.size, offset: 0 };
      });
    setBusy(true);
    startProgress(items, "Uploading " + items.length + " file" + (items.length === 1 ? "" : "s"));
    var version = null;
    hashAll(items)
      .then(function () {
        status("Declaring the new version…");
        meta.files = items.map(function (item) {
          return { path: item.path, size: item.size, sha256: item.sha256 };
        });
        return api("POST", versionsUrl, meta);
      })
      .then(function (created) {
        version = created.version;
        var urls = {};
        (created.uploads || []).forEach(function (u) {
          // Same origin as this page, whatever host name the server put in the URL:
          // the session cookie only travels there.
          var parsed = new URL(u.url, window.location.href);
          urls[u.path] = parsed.pathname + parsed.search;
        });
        items.forEach(function (item) {
          item.url = urls[item.path] || fileUrl(version, item.path);
          item.complete = !urls[item.path];
        });
        savePending(version, items);
        $("#progress-title").textContent = "Uploading version " + version;
        items.forEach(function (item) {
          if (item.complete) item.ui.done();
          else item.ui.show(0, "waiting");
        });
        return sendAll(
          version,
          items.filter(function (item) {
            return !item.complete;
          })
        );
      })
      .catch(function (err) {
        failed(err, version, version ? items : null);
      });
  });

  // Continue a version whose files are partly stored: ask the server where each file is.
  function resume(version, items) {
    clearError();
    setBusy(true);
    $("#resume").hidden = true;
    startProgress(items, "Resuming version " + version);
    status("Asking the server how far each file got…");
    items.forEach(function (item) {
      item.url = fileUrl(version, item.path);
    });
    return items
      .reduce(function (chain, item) {
        return chain.then(function () {
          return headOffset(item).then(function (state) {
            if (!state) throw new UploadError("The server cannot be reached. Try again in a moment.");
            item.offset = state.offset;
            item.complete = state.complete;
            if (state.complete) item.ui.done();
            else item.ui.progress(state.offset);
          });
        });
      }, Promise.resolve())
      .then(function () {
        return sendAll(
          version,
          items.filter(function (item) {
            return !item.complete;
          })
        );
      })
      .catch(function (err) {
        failed(err, version, items);
      });
  }

  $("#start-over").addEventListener("click", function () {
    forgetPending();
    lastFailed = null;
    clearError();
    progressCard.hidden = true;
    form.hidden = false;
  });

  $("#retry-button").addEventListener("click", function () {
    if (!lastFailed || busy) return;
    resume(lastFailed.version, lastFailed.items);
  });

  // --- after a reload: resume the remembered upload -------------------------------------

  var pending = loadPending();
  var resumeBox = $("#resume");
  var resumeMatched = null;

  function matchPending(record, picked) {
    var matched = [];
    var missing = [];
    record.files.forEach(function (want) {
      var same = function (c) {
        return c.file.size === want.size && c.file.lastModified === want.lastModified;
      };
      var found = picked.filter(function (c) {
        return c.path === want.path && same(c);
      })[0];
      if (!found) {
        var base = want.path.split("/").pop();
        var byName = picked.filter(function (c) {
          return c.file.name === base && same(c);
        });
        found = byName.length === 1 ? byName[0] : null;
      }
      if (found) {
        matched.push({ file: found.file, path: want.path, size: want.size, sha256: want.sha256 });
      } else {
        missing.push(want.path);
      }
    });
    return { matched: matched, missing: missing };
  }

  function onResumePick(input) {
    var picked = fromInput(input);
    input.value = "";
    var result = matchPending(pending, picked);
    var note = $("#resume-match");
    if (result.missing.length) {
      resumeMatched = null;
      $("#resume-button").disabled = true;
      note.className = "error";
      note.textContent =
        "These files were not among the ones chosen, or have changed since: " + result.missing.join(", ");
    } else {
      resumeMatched = result.matched;
      $("#resume-button").disabled = false;
      note.className = "muted";
      note.textContent = "All " + result.matched.length + " files found. Resume to continue the upload.";
    }
  }

  if (pending) {
    api("GET", versionsUrl + pending.version + "/").then(
      function (detail) {
        if (!detail || detail.state !== "uploading") {
          forgetPending(); // finished (or gone) meanwhile
          return;
        }
        $("#resume-version").textContent = pending.version;
        var list = $("#resume-files");
        pending.files.forEach(function (f) {
          list.appendChild(
            el("li", {}, [el("span", { className: "mono", text: f.path }), " ", el("span", { className: "muted", text: formatBytes(f.size) })])
          );
        });
        resumeBox.hidden = false;
      },
      function (err) {
        if (err.status === 404) forgetPending();
      }
    );
    $("#resume-files-input").addEventListener("change", function () {
      onResumePick($("#resume-files-input"));
    });
    $("#resume-folder-input").addEventListener("change", function () {
      onResumePick($("#resume-folder-input"));
    });
    $("#resume-button").addEventListener("click", function () {
      if (!resumeMatched || busy) return;
      resume(pending.version, resumeMatched);
    });
    $("#resume-discard").addEventListener("click", function () {
      forgetPending();
      resumeBox.hidden = true;
    });
  }
})();
